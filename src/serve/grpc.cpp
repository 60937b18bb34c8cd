#include "kd/serve/grpc.h"

#include <cstring>
#include <optional>

#include <fmt/format.h>
#include <grpc/support/log.h>
#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "grpc_predict_v2.grpc.pb.h"
#include "kd/core/error.h"
#include "kd/core/version.h"
#include "kd/serve/service.h"
#include "protocol.h"
#include "responses.h"

namespace kd {
namespace {

namespace pb = ::inference;

grpc::Status status_of(int http_status, const std::string& message) {
  switch (http_status) {
    case 200:
      return grpc::Status::OK;
    case 400:
      return {grpc::StatusCode::INVALID_ARGUMENT, message};
    case 401:
      return {grpc::StatusCode::UNAUTHENTICATED, message};
    case 404:
      return {grpc::StatusCode::NOT_FOUND, message};
    case 413:
      return {grpc::StatusCode::RESOURCE_EXHAUSTED, message};
    case 503:
      return {grpc::StatusCode::UNAVAILABLE, message};
    default:
      return {grpc::StatusCode::INTERNAL, message};
  }
}

std::string authorization(const grpc::ServerContextBase* ctx) {
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  return it == md.end() ? std::string() : std::string(it->second.data(), it->second.size());
}

// Typed contents laid out as raw little-endian bytes, so one reader checks and converts both.
template <typename T, typename Field>
void append_as(std::string& out, const Field& values) {
  for (const auto& v : values) {
    const T x = static_cast<T>(v);
    out.append(reinterpret_cast<const char*>(&x), sizeof x);
  }
}

std::string contents_bytes(const pb::ModelInferRequest::InferInputTensor& t, size_t index) {
  const auto& c = t.contents();
  std::string out;
  const std::string& dt = t.datatype();
  if (dt == "FP32") {
    append_as<float>(out, c.fp32_contents());
  } else if (dt == "FP64") {
    append_as<double>(out, c.fp64_contents());
  } else if (dt == "UINT8") {
    for (uint32_t v : c.uint_contents()) {
      if (v > 255) throw BadRequest(fmt::format("inputs[{}]: {} is not a UINT8 value", index, v));
      out.push_back(static_cast<char>(v));
    }
  } else if (dt == "BYTES") {
    for (const auto& b : c.bytes_contents()) {
      const auto n = static_cast<uint32_t>(b.size());
      out.append(reinterpret_cast<const char*>(&n), 4);
      out += b;
    }
  } else if (dt == "FP16") {
    throw BadRequest(fmt::format("inputs[{}]: FP16 data goes in raw_input_contents", index));
  }
  return out;
}

// ModelInfer is a callback method: the batch's worker finishes the call, so no gRPC thread waits
// for a batch (32 clients would hold 32 threads). The quick metadata methods stay synchronous.
class InferenceService final : public pb::GRPCInferenceService::WithCallbackMethod_ModelInfer<
                                   pb::GRPCInferenceService::Service> {
 public:
  explicit InferenceService(kd::Service& s) : service_(s) {}

  grpc::Status ServerLive(grpc::ServerContext*, const pb::ServerLiveRequest*,
                          pb::ServerLiveResponse* out) override {
    out->set_live(true);
    return grpc::Status::OK;
  }
  grpc::Status ServerReady(grpc::ServerContext*, const pb::ServerReadyRequest*,
                           pb::ServerReadyResponse* out) override {
    out->set_ready(true);
    return grpc::Status::OK;
  }
  grpc::Status ModelReady(grpc::ServerContext* ctx, const pb::ModelReadyRequest* in,
                          pb::ModelReadyResponse* out) override {
    if (auto refused = check_name(in->name())) return *refused;
    auto r = get(ctx, "/v2/models/" + in->name() + version_path(in->version()) + "/ready");
    out->set_ready(r.status == 200);
    return r.status == 404 ? grpc::Status::OK : status(r);
  }
  grpc::Status ServerMetadata(grpc::ServerContext* ctx, const pb::ServerMetadataRequest*,
                              pb::ServerMetadataResponse* out) override {
    auto r = get(ctx, "/v2");
    if (r.status != 200) return status(r);
    out->set_name("kd");
    out->set_version(kVersion);
    return grpc::Status::OK;
  }
  grpc::Status ModelMetadata(grpc::ServerContext* ctx, const pb::ModelMetadataRequest* in,
                             pb::ModelMetadataResponse* out) override {
    // The HTTP route's answer, translated: one description of a model for both protocols.
    if (auto refused = check_name(in->name())) return *refused;
    auto r = get(ctx, "/v2/models/" + in->name() + version_path(in->version()));
    if (r.status != 200) return status(r);
    const auto j = nlohmann::json::parse(r.body);
    out->set_name(j.at("name").get<std::string>());
    for (const auto& v : j.at("versions")) out->add_versions(v.get<std::string>());
    out->set_platform(j.at("platform").get<std::string>());
    for (const char* side : {"inputs", "outputs"})
      for (const auto& t : j.at(side)) {
        auto* m = std::string(side) == "inputs" ? out->add_inputs() : out->add_outputs();
        m->set_name(t.at("name").get<std::string>());
        m->set_datatype(t.at("datatype").get<std::string>());
        for (int64_t d : t.at("shape")) m->add_shape(d);
      }
    return grpc::Status::OK;
  }

  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* ctx,
                                       const pb::ModelInferRequest* in,
                                       pb::ModelInferResponse* out) override {
    auto* reactor = ctx->DefaultReactor();
    auto request = std::make_shared<InferRequest>();
    // The key before anything about the request is looked at.
    HttpRequest key_check;
    key_check.method = "GET";
    key_check.path = "/v2";
    key_check.headers["authorization"] = authorization(ctx);
    if (auto r = service_.handle(key_check); r.status == 401) {
      reactor->Finish(status(r));
      return reactor;
    }
    try {
      if (!in->model_version().empty() && in->model_version() != "1") {
        reactor->Finish(
            {grpc::StatusCode::NOT_FOUND, fmt::format("model '{}' has only version 1, not '{}'",
                                                      in->model_name(), in->model_version())});
        return reactor;
      }
      *request = to_request(*in);
    } catch (const BadRequest& e) {
      reactor->Finish({grpc::StatusCode::INVALID_ARGUMENT, e.what()});
      return reactor;
    }
    service_.infer_tensors(in->model_name(), authorization(ctx), std::move(request),
                           [reactor, out](int code, InferReply reply, std::string error) {
                             if (code != 200) return reactor->Finish(status_of(code, error));
                             out->set_model_name(reply.model);
                             out->set_model_version("1");
                             if (reply.has_id) out->set_id(reply.id);
                             for (const auto& [name, tensor] : reply.outputs) {
                               const auto t = serve_detail::wire_tensor(tensor);
                               auto* o = out->add_outputs();
                               o->set_name(name);
                               o->set_datatype(serve_detail::wire_datatype(t));
                               for (int64_t d : t.sizes()) o->add_shape(d);
                               out->add_raw_output_contents(
                                   static_cast<const char*>(t.data_ptr()),
                                   static_cast<size_t>(t.numel()) * t.element_size());
                             }
                             reactor->Finish(grpc::Status::OK);
                           });
    return reactor;
  }

 private:
  // A model name goes into an HTTP path of the service: one that is empty, holds a '/' (which
  // would reach another route: "m/config") or is longer than any served name is not one.
  static std::optional<grpc::Status> check_name(const std::string& name) {
    if (!name.empty() && name.size() <= 256 && name.find('/') == std::string::npos)
      return std::nullopt;
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        fmt::format("no model named '{}'", name.substr(0, 64)));
  }
  static std::string version_path(const std::string& v) {
    return v.empty() ? "" : "/versions/" + v;
  }
  HttpResponse get(grpc::ServerContext* ctx, const std::string& path) {
    HttpRequest r;
    r.method = "GET";
    r.path = path;
    r.headers["authorization"] = authorization(ctx);
    return service_.handle(r);
  }
  static grpc::Status status(const HttpResponse& r) {
    std::string message = r.body;
    try {
      message = nlohmann::json::parse(r.body).at("error").get<std::string>();
    } catch (const std::exception&) {
    }
    return status_of(r.status, message);
  }

  InferRequest to_request(const pb::ModelInferRequest& in) const {
    const InferLimits limits{service_.options().max_tensor_elements, service_.options().max_images};
    InferRequest req;
    req.id = in.id();
    req.has_id = !in.id().empty();
    const bool raw = in.raw_input_contents_size() > 0;
    if (raw && in.raw_input_contents_size() != in.inputs_size())
      throw BadRequest(fmt::format("{} inputs but {} raw_input_contents", in.inputs_size(),
                                   in.raw_input_contents_size()));
    for (int i = 0; i < in.inputs_size(); ++i) {
      const auto& t = in.inputs(i);
      InferInput input;
      input.name = t.name();
      input.datatype = t.datatype();
      input.shape.assign(t.shape().begin(), t.shape().end());
      if (raw && t.has_contents())
        throw BadRequest(fmt::format("inputs[{}] has contents and raw_input_contents", i));
      read_tensor_bytes(input, raw ? in.raw_input_contents(i) : contents_bytes(t, i),
                        static_cast<size_t>(i), limits);
      req.inputs.push_back(std::move(input));
    }
    for (const auto& o : in.outputs()) req.outputs.push_back({o.name(), true});
    return req;
  }
  kd::Service& service_;  // the base class has a Service of its own
};

}  // namespace

struct GrpcServer::Impl {
  Impl(kd::Service& s, GrpcOptions o) : options(std::move(o)), service(s) {}
  GrpcOptions options;
  InferenceService service;
  std::unique_ptr<grpc::Server> server;
};

GrpcServer::GrpcServer(Service& service, GrpcOptions options)
    : impl_(std::make_unique<Impl>(service, std::move(options))) {}

GrpcServer::~GrpcServer() { stop(); }

int GrpcServer::start() {
  // gRPC's own log lines (a failed bind prints a page of them) go to kd's log at debug level:
  // what went wrong reaches the user as kd's one line.
  gpr_set_log_function([](gpr_log_func_args* args) {
    spdlog::debug("grpc {}:{}: {}", args->file, args->line, args->message);
  });
  auto& o = impl_->options;
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string address = fmt::format(
      "{}:{}", o.host.find(':') != std::string::npos ? "[" + o.host + "]" : o.host, o.port);
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
  // gRPC sets SO_REUSEPORT by default: a second server would share the port silently.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<int64_t>(o.max_message_bytes, INT32_MAX)));
  builder.SetMaxSendMessageSize(
      static_cast<int>(std::min<int64_t>(o.max_message_bytes, INT32_MAX)));
  builder.RegisterService(&impl_->service);
  impl_->server = builder.BuildAndStart();
  KD_CHECK(impl_->server && port > 0,
           "cannot listen for gRPC on {} (port in use, or not this "
           "machine's address?)",
           address);
  return port;
}

void GrpcServer::stop() {
  if (impl_->server) {
    impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    impl_->server.reset();
  }
}

}  // namespace kd
