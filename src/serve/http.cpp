#include "kd/serve/http.h"

#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <zlib.h>

#include "kd/core/error.h"
#include "kd/serve/service.h"

// gperftools' tcmalloc, when the program links it (kd's CLI does): its free memory goes back to
// the system on request. Without it, glibc's malloc_trim does the same.
extern "C" void MallocExtension_ReleaseFreeMemory() __attribute__((weak));

namespace kd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// What every connection shares: the service, the limits, the one I/O context, the handler pool.
struct Transport {
  Transport(Service& s, HttpOptions o) : service(s), options(std::move(o)) {}
  Service& service;
  HttpOptions options;
  // Declared before io: connections still queued in io when it is destroyed count themselves out.
  std::atomic<int64_t> open_connections{0};
  std::atomic<bool> stopped{false};
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  asio::steady_timer accept_retry{io};
  std::unique_ptr<asio::thread_pool> handlers;  // last: joined first, while io still exists
  // Requests handed to the service and not answered yet. Answers come from the service's batch
  // workers, which outlive this transport: it waits for them before io (which their answers are
  // posted to) and the connections (which they hold) go away.
  std::mutex pending_mu;
  std::condition_variable answered;
  int64_t pending = 0;
  void accept();
};

constexpr int kListenBacklog = 1024;
// A body at least this large gives its memory back to the system once answered: the next
// request may be small, and a server keeps running for weeks.
constexpr size_t kReleaseAfterBytes = 1 << 20;

void release_free_memory() {
  if (MallocExtension_ReleaseFreeMemory)
    MallocExtension_ReleaseFreeMemory();
  else
    malloc_trim(0);
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Query components are percent-decoded ('+' is a space there); paths and header values are not.
std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex_digit(s[i + 1]) >= 0 &&
               hex_digit(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

void split_target(std::string_view target, HttpRequest& out) {
  const size_t q = target.find('?');
  out.path = std::string(target.substr(0, q));
  if (q == std::string_view::npos) return;
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    const size_t amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    const size_t eq = pair.find('=');
    if (!pair.empty())
      out.query.emplace(percent_decode(pair.substr(0, eq)),
                        eq == std::string_view::npos ? "" : percent_decode(pair.substr(eq + 1)));
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
}

// Content-Encoding gzip or deflate, inflated up to `limit` bytes. nullopt: larger than the limit;
// kd::Error: not a valid stream.
std::optional<std::string> inflate_body(const std::string& in, bool gzip, size_t limit) {
  z_stream z{};
  // 15 + 32: zlib or gzip header, detected; -15 would be raw deflate.
  if (inflateInit2(&z, gzip ? 15 + 16 : 15 + 32) != Z_OK) fail("cannot start zlib");
  std::string out;
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  char chunk[1 << 16];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    z.next_out = reinterpret_cast<Bytef*>(chunk);
    z.avail_out = sizeof(chunk);
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&z);
      fail("the {} body is not a valid stream", gzip ? "gzip" : "deflate");
    }
    const size_t got = sizeof(chunk) - z.avail_out;
    if (out.size() + got > limit) {
      inflateEnd(&z);
      return std::nullopt;
    }
    out.append(chunk, got);
    if (rc == Z_OK && got == 0 && z.avail_in == 0) {
      inflateEnd(&z);
      fail("the {} body ends before its stream does", gzip ? "gzip" : "deflate");
    }
  }
  inflateEnd(&z);
  return out;
}

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, Transport& server) : stream_(std::move(socket)), server_(server) {
    ++server_.open_connections;
  }
  ~Connection() { --server_.open_connections; }

  void start() { wait_for_request(std::chrono::seconds(server_.options.header_timeout_seconds)); }

 private:
  using Parser = http::request_parser<http::string_body>;
  const HttpOptions& opts() const { return server_.options; }

  // The first byte of the next request may take the idle time; once it is here, the line and
  // headers must follow within the header time (slow senders lose their connection, and the
  // single I/O thread never waits on anyone).
  void wait_for_request(std::chrono::seconds wait) {
    if (buffer_.size() > 0) return read_header();
    stream_.expires_after(wait);
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              if (ec)
                                return self->close();  // closed by the client, or idle too long
                              self->buffer_.commit(n);
                              self->read_header();
                            });
  }

  void read_header() {
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(opts().max_header_bytes));
    parser_->body_limit(static_cast<uint64_t>(opts().max_body_bytes));
    stream_.expires_after(std::chrono::seconds(opts().header_timeout_seconds));
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == asio::error::eof) return close();
    if (ec == beast::error::timeout)
      return fail_request(408, "request headers not received in time");
    if (ec == http::error::header_limit)
      return fail_request(431, fmt::format("request headers larger than the limit of {} bytes",
                                           opts().max_header_bytes));
    if (ec == http::error::body_limit) return too_large();
    if (ec == http::error::bad_transfer_encoding || ec == http::error::bad_content_length ||
        ec == http::error::multiple_content_length)
      return fail_request(400, fmt::format("ambiguous message framing ({})", ec.message()));
    if (ec) return fail_request(400, fmt::format("malformed HTTP request ({})", ec.message()));
    const auto& req = parser_->get();
    if (std::distance(req.begin(), req.end()) > opts().max_header_count)
      return fail_request(431,
                          fmt::format("more than {} request headers", opts().max_header_count));
    // Beast reads a body as chunked when `chunked` is the last coding and ignores the header
    // otherwise; RFC 9112 leaves a server no safe way to frame other codings.
    if (auto te = req.find(http::field::transfer_encoding); te != req.end()) {
      if (lower(trim(te->value())) != "chunked")
        return fail_request(501,
                            fmt::format("Transfer-Encoding '{}' is not supported (only chunked)",
                                        std::string(te->value())));
    }
    if (auto expect = req.find(http::field::expect); expect != req.end()) {
      if (lower(trim(expect->value())) != "100-continue")
        return fail_request(
            417, fmt::format("Expect '{}' is not supported", std::string(expect->value())));
      if (!parser_->is_done()) {
        // curl sends Expect: 100-continue before bodies over 1 KiB, and waits a second for this.
        static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        stream_.expires_after(std::chrono::seconds(opts().timeout_seconds));
        return asio::async_write(stream_, asio::buffer(kContinue),
                                 [self = shared_from_this()](beast::error_code ec, size_t) {
                                   if (ec) return self->close();
                                   self->read_body();
                                 });
      }
    }
    read_body();
  }

  void read_body() {
    if (parser_->is_done()) return dispatch();
    stream_.expires_after(std::chrono::seconds(opts().timeout_seconds));
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec == http::error::body_limit) return self->too_large();
                       if (ec == beast::error::timeout)
                         return self->fail_request(408, "request body not received in time");
                       if (ec == http::error::partial_message || ec == asio::error::eof ||
                           ec == asio::error::connection_reset)
                         return self->close();
                       if (ec)
                         return self->fail_request(
                             400, fmt::format("malformed request body ({})", ec.message()));
                       self->dispatch();
                     });
  }

  void too_large() {
    fail_request(
        413, fmt::format("request body larger than the limit of {} bytes", opts().max_body_bytes));
  }

  // A complete request: decoded, handed to a handler thread, answered on this connection.
  void dispatch() {
    auto& req = parser_->get();
    auto out = std::make_shared<HttpRequest>();
    out->method = std::string(req.method_string());
    split_target(req.target(), *out);
    for (const auto& f : req) out->headers.emplace(lower(f.name_string()), std::string(f.value()));
    out->body = std::move(req.body());
    keep_alive_ = req.keep_alive();
    head_ = req.method() == http::verb::head;
    if (head_) out->method = "GET";
    version_ = req.version();
    body_bytes_ = out->body.size();
    out->sole_connection = server_.open_connections.load() == 1;
    bool compressed = false, gzip = false;
    if (auto enc = req.find(http::field::content_encoding); enc != req.end()) {
      const std::string coding = lower(trim(enc->value()));
      if (coding == "gzip" || coding == "deflate" || coding == "x-gzip") {
        compressed = true;
        gzip = coding != "deflate";
      } else if (coding != "identity") {
        return fail_request(415, fmt::format("Content-Encoding '{}' is not supported (gzip, "
                                             "deflate or none)",
                                             coding));
      }
    }
    parser_.reset();
    {
      std::lock_guard lock(server_.pending_mu);
      ++server_.pending;
    }
    if (!compressed) return handle(std::move(out));
    // Inflating may take milliseconds per request (32 KiB to 32 MiB): on the handler pool, so
    // that the I/O thread goes on serving every other connection meanwhile.
    asio::post(*server_.handlers, [self = shared_from_this(), out, gzip]() mutable {
      std::optional<std::string> plain;
      std::string error;
      try {
        plain = inflate_body(out->body, gzip, static_cast<size_t>(self->opts().max_body_bytes));
      } catch (const Error& e) {
        error = e.what();
      }
      if (!error.empty() || !plain) {
        asio::dispatch(self->stream_.get_executor(), [self, error] {
          if (error.empty())
            self->too_large();
          else
            self->fail_request(400, error);
          self->answered_one();
        });
        return;
      }
      out->body = std::move(*plain);
      self->body_bytes_ = std::max(self->body_bytes_, out->body.size());
      out->headers.erase("content-encoding");
      self->handle(std::move(out));
    });
  }

  void answered_one() {
    std::lock_guard lock(server_.pending_mu);
    if (--server_.pending == 0) server_.answered.notify_all();
  }

  // Quick requests are answered before the service's handle() returns, on the calling thread
  // (the I/O thread, or a handler after inflating); inference by its batch's worker; blocking
  // work on the handler pool. `pending` counts the request until it is answered.
  void handle(std::shared_ptr<HttpRequest> out) {
    server_.service.handle(
        std::move(*out),
        [self = shared_from_this()](HttpResponse response) mutable {
          auto res = std::make_shared<HttpResponse>(std::move(response));
          auto& server = self->server_;
          asio::dispatch(self->stream_.get_executor(), [self, res] { self->write(*res); });
          self.reset();  // before the count: the transport may go once it reaches 0
          std::lock_guard lock(server.pending_mu);
          if (--server.pending == 0) server.answered.notify_all();
        },
        [this](std::function<void()> work) { asio::post(*server_.handlers, std::move(work)); });
  }

  // The transport's own errors: counted by the service, answered in JSON, connection closed
  // (after a framing error the rest of the stream cannot be trusted).
  void fail_request(int status, const std::string& why) {
    unread_ = parser_ && !parser_->is_done();
    keep_alive_ = false;
    head_ = false;
    parser_.reset();
    write(server_.service.transport_error(status, why));
  }

  void write(const HttpResponse& from) {
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(from.status), version_ ? version_ : 11);
    res->set(http::field::content_type, from.content_type);
    for (const auto& [k, v] : from.headers) res->insert(k, v);
    res->keep_alive(keep_alive_ && !server_.stopped);
    if (head_) {
      res->content_length(from.body.size());
    } else {
      res->body() = from.body;
      res->prepare_payload();
    }
    stream_.expires_after(std::chrono::seconds(opts().timeout_seconds));
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res](beast::error_code ec, size_t) {
                        self->after_write(ec, res->keep_alive());
                      });
  }

  void after_write(beast::error_code ec, bool keep) {
    if (body_bytes_ >= kReleaseAfterBytes) {
      buffer_.shrink_to_fit();
      release_free_memory();
    }
    body_bytes_ = 0;
    if (ec || !keep) return close();
    wait_for_request(std::chrono::seconds(opts().idle_timeout_seconds));
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    if (!unread_) return stream_.close();
    // The request was refused before its body was read: closing now would make the kernel reset
    // the connection, and the client might lose the answer. Read and drop what it still sends,
    // for a short while.
    unread_ = false;
    stream_.expires_after(std::chrono::seconds(2));
    drain();
  }

  void drain() {
    buffer_.clear();
    stream_.async_read_some(buffer_.prepare(64 << 10),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->stream_.close();
                              self->drain();
                            });
  }

  beast::tcp_stream stream_;
  Transport& server_;
  beast::flat_buffer buffer_;
  std::optional<Parser> parser_;
  bool keep_alive_ = true, head_ = false, unread_ = false;
  unsigned version_ = 11;
  size_t body_bytes_ = 0;
};

}  // namespace

void Transport::accept() {
  acceptor.async_accept(asio::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
    if (stopped || !acceptor.is_open()) return;
    if (ec) {
      // Out of file descriptors (EMFILE) and the like: waiting clients stay in the listen
      // queue; try again shortly instead of spinning.
      spdlog::warn("accept: {}", ec.message());
      accept_retry.expires_after(std::chrono::milliseconds(100));
      accept_retry.async_wait([this](beast::error_code) { accept(); });
      return;
    }
    if (open_connections >= options.max_connections) {
      beast::error_code ignored;
      socket.close(ignored);  // the client sees the connection closed at once
    } else {
      socket.set_option(tcp::no_delay(true));
      std::make_shared<Connection>(std::move(socket), *this)->start();
    }
    accept();
  });
}

struct HttpServer::Impl : Transport {
  using Transport::Transport;
};

HttpServer::HttpServer(Service& service, HttpOptions options)
    : impl_(std::make_unique<Impl>(service, std::move(options))) {}

HttpServer::~HttpServer() { stop(); }

int HttpServer::bind() {
  auto& o = impl_->options;
  beast::error_code ec;
  const auto address = asio::ip::make_address(o.host == "localhost" ? "127.0.0.1" : o.host, ec);
  KD_CHECK(!ec, "--host {}: not an IP address ({})", o.host, ec.message());
  const tcp::endpoint endpoint(address, static_cast<uint16_t>(o.port));
  auto& a = impl_->acceptor;
  a.open(endpoint.protocol(), ec);
  KD_CHECK(!ec, "cannot open a socket for {}:{}: {}", o.host, o.port, ec.message());
  // SO_REUSEADDR lets a restarted server bind while old connections linger in TIME_WAIT; unlike
  // SO_REUSEPORT it never lets a second server share a port that one is listening on.
  a.set_option(asio::socket_base::reuse_address(true), ec);
  a.bind(endpoint, ec);
  KD_CHECK(
      !ec, "cannot listen on {}:{}: {}", o.host, o.port,
      ec == asio::error::address_in_use ? "the port is in use by another program" : ec.message());
  a.listen(kListenBacklog, ec);
  KD_CHECK(!ec, "cannot listen on {}:{}: {}", o.host, o.port, ec.message());
  // Every connection is a file descriptor: take what the hard limit allows.
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  return a.local_endpoint().port();
}

void HttpServer::run() {
  const int threads = impl_->options.threads > 0
                          ? impl_->options.threads
                          : 8 * std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  impl_->handlers = std::make_unique<asio::thread_pool>(threads);
  impl_->accept();
  impl_->io.run();
  impl_->handlers->join();
  std::unique_lock lock(impl_->pending_mu);
  impl_->answered.wait(lock, [this] { return impl_->pending == 0; });
}

void HttpServer::stop() {
  if (impl_->stopped.exchange(true)) return;
  asio::post(impl_->io, [this] {
    beast::error_code ignored;
    impl_->acceptor.close(ignored);
    impl_->io.stop();
  });
  // The handler pool is not stopped: run() joins it once the requests it holds are answered
  // (each is counted in `pending` until it is).
}

}  // namespace kd
