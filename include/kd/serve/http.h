#pragma once
/// @file
/// The transport of `kd serve`: HTTP/1.1 on Boost.Beast over Asio, event-driven. One I/O thread
/// reads and writes every connection and hands complete requests to kd::Service, which answers
/// quick ones at once, queues inference for its batch (the batch's worker answers) and gives
/// what may block (images, TF Serving, large bodies, the runs pages) to a pool of handler
/// threads. Per connection: deadlines for the header,
/// the body and idle keep-alive; limits on header bytes, header count and body bytes (the decoded
/// bytes, whatever the framing: Content-Length, chunked, gzip); RFC 9112 framing (ambiguous
/// requests get 400 and the connection is closed); pipelined requests answered in order.
#include <cstdint>
#include <memory>
#include <string>

namespace kd {

class Service;

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;  ///< 0: any free port (the bound one is returned by bind())
  /// Handler threads for the requests that block (each may wait on its batch); 0: 8 per core.
  /// OIP inference of small bodies needs none.
  int threads = 0;
  int64_t max_body_bytes = 32ll << 20;  ///< larger requests get 413 (after decoding)
  int timeout_seconds = 30;             ///< receiving a request's body / sending a response
  int header_timeout_seconds = 10;      ///< receiving a request's line and headers
  int idle_timeout_seconds = 60;        ///< a keep-alive connection waiting for its next request
  int64_t max_header_bytes = 64 << 10;  ///< request line and headers together
  int max_header_count = 100;
  int64_t max_connections = 10000;  ///< open at once; more wait in the listen queue
};

class HttpServer {
 public:
  HttpServer(Service& service, HttpOptions options);
  ~HttpServer();
  /// Returns the port; kd::Error naming the address when it cannot be bound (in use included).
  int bind();
  void run();   ///< serves until stop()
  void stop();  ///< safe from any thread

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kd
