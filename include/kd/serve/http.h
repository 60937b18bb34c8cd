#pragma once
// The transport of `kd serve`: cpp-httplib's server, a thread pool for connections, limits on
// request size and time, and nothing else. Every request is handed to kd::Service.
#include <memory>
#include <string>

namespace kd {

class Service;

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                      // 0: any free port (the bound one is returned by bind())
  int threads = 64;                     // connections served at once (each waits on its batch)
  int64_t max_body_bytes = 32ll << 20;  // larger requests get 413 before their body is read
  int timeout_seconds = 30;             // reading a request / writing a response
};

class HttpServer {
 public:
  HttpServer(Service& service, HttpOptions options);
  ~HttpServer();
  int bind();   // returns the port; kd::Error when the address cannot be bound
  void run();   // serves until stop()
  void stop();  // safe from any thread

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kd
