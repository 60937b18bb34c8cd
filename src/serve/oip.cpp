#include "kd/serve/service.h"

#include <algorithm>
#include <map>

#include <fmt/ranges.h>
#include <torch/torch.h>

#include "protocol.h"
#include "responses.h"
#include "service_state.h"

namespace kd {

using namespace serve_detail;

// Open Inference Protocol v2 (KServe): model metadata and inference with JSON tensors.

namespace {

// Every output a model can return: name, datatype, shape (-1: the batch).
json output_specs(const ModelRunner& r, int64_t max_detections) {
  json outputs = json::array();
  if (r.is_detector()) {
    const int64_t k = max_detections;
    outputs = {{{"name", "num_detections"}, {"datatype", "INT32"}, {"shape", {-1, 1}}},
               {{"name", "detection_boxes"}, {"datatype", "FP32"}, {"shape", {-1, k, 4}}},
               {{"name", "detection_scores"}, {"datatype", "FP32"}, {"shape", {-1, k}}},
               {{"name", "detection_classes"}, {"datatype", "INT32"}, {"shape", {-1, k}}},
               // Only when asked for by name: the head's outputs before decoding and NMS.
               {{"name", "raw"},
                {"datatype", "FP32"},
                {"shape", {-1, r.num_anchors(), r.spec().num_classes() + 4}}}};
  } else {
    outputs = {
        {{"name", "logits"}, {"datatype", "FP32"}, {"shape", {-1, r.spec().num_classes()}}},
        {{"name", "probabilities"}, {"datatype", "FP32"}, {"shape", {-1, r.spec().num_classes()}}}};
  }
  return outputs;
}

json count_ns(uint64_t count, uint64_t ns) { return {{"count", count}, {"ns", ns}}; }

}  // namespace

HttpResponse Service::model_metadata(Served& m) {
  const ModelRunner& r = *m.runner;
  const json outputs = output_specs(r, options_.max_detections);
  return json_response(
      200,
      {{"name", r.name()},
       {"versions", {"1"}},
       {"platform", "kd_libtorch"},
       {"inputs", {{{"name", "input"}, {"datatype", "FP32"}, {"shape", r.input_shape()}}}},
       {"outputs", outputs},
       {"parameters",
        {{"task", r.spec().task},
         {"arch", r.spec().arch},
         {"class_names", r.spec().class_names},
         {"input",
          "FP32 (or FP64, FP16) pixels in [0, 1], UINT8 pixels in [0, 255], or BYTES: PNG/JPEG "
          "images (shape [N]; base64 in JSON, raw bytes in binary)"},
         {"boxes", "x1, y1, x2, y2 in input pixels, or in the image's pixels for BYTES inputs"}}}});
}

HttpResponse Service::model_config(Served& m) {
  const ModelRunner& r = *m.runner;
  const auto in = r.input_shape();  // [-1, C, H, W]
  json outputs = json::array();
  for (const auto& o : output_specs(r, options_.max_detections)) {
    auto dims = o["shape"].get<std::vector<int64_t>>();
    dims.erase(dims.begin());
    outputs.push_back({{"name", o["name"]},
                       {"data_type", "TYPE_" + o["datatype"].get<std::string>()},
                       {"dims", dims}});
  }
  const auto& b = options_.batch;
  return json_response(
      200, {{"name", r.name()},
            {"platform", "kd_libtorch"},
            {"backend", "kd"},
            {"version_policy", {{"latest", {{"num_versions", 1}}}}},
            {"max_batch_size", b.max_batch},
            {"input",
             {{{"name", "input"},
               {"data_type", "TYPE_FP32"},
               {"format", "FORMAT_NCHW"},
               {"dims", {in.at(1), in.at(2), in.at(3)}}}}},
            {"output", outputs},
            {"dynamic_batching",
             {{"max_queue_delay_microseconds", b.max_wait.count()},
              {"preferred_batch_size", {b.max_batch}},
              {"default_queue_policy", {{"max_queue_size", b.max_queue}}}}},
            {"instance_group", {{{"name", r.name()}, {"count", b.workers}, {"kind", "KIND_CPU"}}}},
            {"parameters",
             {{"task", {{"string_value", std::string(to_string(r.spec().task))}}},
              {"arch", {{"string_value", r.spec().arch}}}}}});
}

HttpResponse Service::model_stats(Served* only) {
  json stats = json::array();
  for (auto& [name, m] : models_) {
    if (only && m.get() != only) continue;
    auto& st = m->stats;
    std::lock_guard lock(st.mu);
    json batches = json::array();
    for (const auto& [size, cn] : st.batches)
      batches.push_back({{"batch_size", size}, {"compute_infer", count_ns(cn.first, cn.second)}});
    stats.push_back({{"name", name},
                     {"version", "1"},
                     {"last_inference", st.last_inference_ms},
                     {"inference_count", st.inferences},
                     {"execution_count", st.executions},
                     {"inference_stats",
                      {{"success", count_ns(st.success, st.success_ns)},
                       {"fail", count_ns(st.fail, st.fail_ns)},
                       {"compute_infer", count_ns(st.executions, st.infer_ns)}}},
                     {"batch_stats", batches}});
  }
  return json_response(200, {{"model_stats", stats}});
}

HttpResponse Service::repository_index() {
  json index = json::array();
  for (const auto& [name, m] : models_)
    index.push_back({{"name", name}, {"version", "1"}, {"state", "READY"}});
  return json_response(200, index);
}

void Service::infer(Served& m, HttpRequest& req, Respond respond, const Offload* offload) {
  auto arrival = std::make_shared<Batcher::Arrival>(m.batcher->expect());
  // The binary tensor data extension (tritonclient's and KServe's default): the JSON part's size.
  int64_t json_bytes = -1;
  if (const std::string h = req.header("inference-header-content-length"); !h.empty()) {
    size_t used = 0;
    try {
      json_bytes = std::stoll(h, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != h.size() || json_bytes < 0)
      bad_request("Inference-Header-Content-Length '{}' is not a byte count", h);
  }
  auto request = std::make_shared<InferRequest>(parse_infer_request(
      req.body, {options_.max_tensor_elements, options_.max_images}, json_bytes));
  std::string().swap(req.body);  // parsed: a 25 MiB body need not wait for its batch
  const bool run_here = req.sole_connection && in_flight_.load() == 1;
  // Images are decoded in planning (milliseconds each, seconds for 30 large PNGs in 62 KiB):
  // never on the transport's thread, which every other connection waits on.
  const bool images = std::any_of(request->inputs.begin(), request->inputs.end(),
                                  [](const InferInput& in) { return in.datatype == "BYTES"; });
  if (offload && images) {
    (*offload)([this, &m, request, arrival, run_here, respond = std::move(respond)]() mutable {
      try {
        submit_infer(m, request, *arrival, respond, run_here);
      } catch (...) {
        respond(failure_response(std::current_exception(),
                                 "POST /v2/models/" + m.runner->name() + "/infer"));
      }
    });
    return;
  }
  submit_infer(m, request, *arrival, respond, run_here);
}

void Service::submit_infer(Served& m, const std::shared_ptr<InferRequest>& request,
                           Batcher::Arrival& arrival, Respond& respond, bool run_here) {
  auto plan = std::make_shared<InferPlan>(plan_infer(m, *request));
  // Runs on the batch's worker thread.
  auto answer = [this, &m, request, plan, respond = std::move(respond)](
                    torch::Tensor y, std::exception_ptr failure) {
    HttpResponse res;
    try {
      if (failure) std::rethrow_exception(failure);
      const InferResult result = finish_infer(m, *plan, y);
      json out = {
          {"model_name", m.runner->name()}, {"model_version", "1"}, {"outputs", json::array()}};
      if (request->has_id) out["id"] = request->id;
      std::string binary;
      for (const auto& w : result.wanted)
        out["outputs"].push_back(
            tensor_json(w.name, result.outputs.at(w.name), w.binary ? &binary : nullptr));
      res = json_response(200, out);
      if (std::any_of(result.wanted.begin(), result.wanted.end(),
                      [](const InferOutput& w) { return w.binary; })) {
        res.headers.emplace_back("Inference-Header-Content-Length",
                                 std::to_string(res.body.size()));
        res.content_type = "application/octet-stream";
        res.body += binary;
      }
    } catch (...) {
      res = failure_response(std::current_exception(),
                             "POST /v2/models/" + m.runner->name() + "/infer");
    }
    respond(std::move(res));
  };
  m.batcher->submit(plan->input, std::move(answer), &arrival, run_here);
}

Service::InferResult Service::run_infer(Served& m, InferRequest& request,
                                        Batcher::Arrival& arrival) {
  InferPlan plan = plan_infer(m, request);
  return finish_infer(m, plan, m.batcher->submit(plan.input, &arrival).get());
}

Service::InferPlan Service::plan_infer(Served& m, InferRequest& request) {
  const ModelRunner& r = *m.runner;
  if (request.inputs.size() != 1)
    bad_request("model '{}' takes one input, got {}", r.name(), request.inputs.size());
  InferInput& in = request.inputs[0];
  const auto want = r.input_shape();

  InferPlan plan;
  if (in.datatype == "BYTES") {
    std::vector<std::string> decoded;
    for (size_t i = 0; i < in.strings.size(); ++i)
      decoded.push_back(
          in.binary ? std::move(in.strings[i])
                    : decode_base64_image(in.strings[i], fmt::format("inputs[0].data[{}]", i)));
    auto batch = prepare_images(m, decoded);
    plan.images = std::move(batch.images);
    plan.input = batch.pixels;
  } else {
    const auto& shape = in.shape;
    if (shape.size() != 4 || shape[0] < 1 || shape[1] != want[1] || shape[2] != want[2] ||
        shape[3] != want[3])
      bad_request("inputs[0]: shape {} does not match the model's input {} (N >= 1)",
                  shape_str(shape), shape_str(want));
    plan.input = torch::from_blob(in.numbers.data(), shape, torch::kFloat).clone();
    std::vector<float>().swap(in.numbers);
  }
  plan.wanted = request.outputs;
  std::vector<std::string> names =
      r.is_detector() ? std::vector<std::string>{"num_detections", "detection_boxes",
                                                 "detection_scores", "detection_classes"}
                      : std::vector<std::string>{"logits", "probabilities"};
  if (plan.wanted.empty())
    for (const auto& n : names) plan.wanted.push_back({n, request.binary_outputs});
  if (r.is_detector()) names.push_back("raw");
  for (size_t i = 0; i < plan.wanted.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (plan.wanted[i].name == plan.wanted[j].name)
        bad_request("outputs: '{}' is asked for twice", plan.wanted[i].name);
  for (const auto& w : plan.wanted)
    if (std::find(names.begin(), names.end(), w.name) == names.end())
      bad_request("model '{}' has no output '{}' (outputs: {})", r.name(), w.name,
                  fmt::join(names, ", "));
  return plan;
}

Service::InferResult Service::finish_infer(Served& m, InferPlan& plan, const torch::Tensor& y) {
  check_finite(y);
  const ModelRunner& r = *m.runner;
  std::map<std::string, torch::Tensor> outputs;
  if (r.is_detector()) {
    std::vector<torch::Tensor> n, b, s, c;
    for (int64_t i = 0; i < y.size(0); ++i) {
      auto d = r.detect(y[i], plan.images.empty() ? nullptr : &plan.images[static_cast<size_t>(i)],
                        options_.score_threshold, options_.max_detections);
      n.push_back(d.count);
      b.push_back(d.boxes);
      s.push_back(d.scores);
      c.push_back(d.classes);
    }
    outputs = {{"num_detections", torch::stack(n)},
               {"detection_boxes", torch::stack(b)},
               {"detection_scores", torch::stack(s)},
               {"detection_classes", torch::stack(c)},
               {"raw", y}};
  } else {
    outputs = {{"logits", y}, {"probabilities", torch::softmax(y, 1)}};
  }
  return {std::move(plan.wanted), std::move(outputs)};
}

}  // namespace kd
