#include "kd/serve/http.h"

#include <algorithm>
#include <cctype>

#include <sys/socket.h>

#include <httplib.h>

#include "kd/core/error.h"
#include "kd/serve/service.h"

namespace kd {

struct HttpServer::Impl {
  Impl(Service& s, HttpOptions o) : service(s), options(std::move(o)) {}
  Service& service;
  HttpOptions options;
  httplib::Server server;
  int listen_fd = -1;
};

namespace {

constexpr int kListenBacklog = 1024;

HttpRequest to_request(const httplib::Request& r) {
  HttpRequest out;
  out.method = r.method;
  out.path = r.path;
  out.body = r.body;
  for (const auto& [k, v] : r.headers) {
    std::string key = k;
    std::transform(key.begin(), key.end(), key.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    out.headers.emplace(std::move(key), v);
  }
  for (const auto& [k, v] : r.params) out.query.emplace(k, v);
  return out;
}

void write(const HttpResponse& from, httplib::Response& to) {
  to.status = from.status;
  for (const auto& [k, v] : from.headers) to.set_header(k, v);
  to.set_content(from.body, from.content_type);
}

}  // namespace

HttpServer::HttpServer(Service& service, HttpOptions options)
    : impl_(std::make_unique<Impl>(service, std::move(options))) {
  auto& s = impl_->server;
  const int threads = std::max(1, impl_->options.threads);
  s.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  s.set_payload_max_length(static_cast<size_t>(impl_->options.max_body_bytes));
  s.set_read_timeout(impl_->options.timeout_seconds, 0);
  s.set_write_timeout(impl_->options.timeout_seconds, 0);
  s.set_keep_alive_max_count(100000);
  // Headers and body go out in separate writes: without TCP_NODELAY, Nagle holds the second
  // one for the client's delayed ACK (~40 ms per request on keep-alive connections).
  s.set_tcp_nodelay(true);
  // Debian's compiled httplib listens with a backlog of 5: a burst of new connections overflows
  // the accept queue and the kernel resets some of them (CI saw "connection reset" in a 48-client
  // burst). The listening socket is remembered here and given a real backlog after bind().
  s.set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    impl_->listen_fd = sock;
  });
  auto handler = [this](const httplib::Request& req, httplib::Response& res) {
    write(impl_->service.handle(to_request(req)), res);
  };
  s.Get(".*", handler);
  s.Post(".*", handler);
  s.Put(".*", handler);
  s.Delete(".*", handler);
  s.Patch(".*", handler);
  // Errors httplib answers itself (body too large, unparsable request line) get a JSON body
  // too; responses kd made already carry one and pass through.
  s.set_error_handler(httplib::Server::HandlerWithResponse(
      [this](const httplib::Request&, httplib::Response& res) -> httplib::Server::HandlerResponse {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        std::string why = fmt::format("HTTP error {}", res.status);
        if (res.status == 400) why = "malformed HTTP request";
        if (res.status == 404) why = "no such route";
        if (res.status == 408) why = "request not received in time";
        if (res.status == 413)
          why = fmt::format("request body larger than the limit of {} bytes",
                            impl_->options.max_body_bytes);
        if (res.status == 414) why = "request URI too long";
        write(impl_->service.transport_error(res.status, why), res);
        return httplib::Server::HandlerResponse::Handled;
      }));
  s.set_exception_handler(
      [this](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        write(impl_->service.transport_error(500, "internal error"), res);
      });
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  auto& o = impl_->options;
  int port = o.port;
  if (port == 0) {
    port = impl_->server.bind_to_any_port(o.host);
    KD_CHECK(port > 0, "cannot listen on {} (any port)", o.host);
  } else {
    KD_CHECK(impl_->server.bind_to_port(o.host, o.port),
             "cannot listen on {}:{} (in use, or not this machine's address?)", o.host, o.port);
  }
  // listen() again on a listening socket only changes its backlog (the kernel caps it at
  // net.core.somaxconn).
  KD_CHECK(impl_->listen_fd >= 0 && ::listen(impl_->listen_fd, kListenBacklog) == 0,
           "cannot set the listen backlog on {}:{}", o.host, port);
  return port;
}

void HttpServer::run() { impl_->server.listen_after_bind(); }

void HttpServer::stop() { impl_->server.stop(); }

}  // namespace kd
