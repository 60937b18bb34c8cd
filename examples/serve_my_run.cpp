// Serving a kd run from one's own program: the same Open Inference Protocol v2 API, web page and
// metrics as `kd serve`, with kd's Service and HttpServer as a library.
//
//   serve_my_run RUN [PORT]            serve until Ctrl-C (PORT 0: any free port)
//   serve_my_run RUN --check IMAGE     answer one image request in-process and exit
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "kd/core/runtime.h"
#include "kd/eval/runner.h"
#include "kd/models/model.h"
#include "kd/serve/http.h"
#include "kd/serve/service.h"

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::cerr << "usage: " << argv[0] << " RUN [PORT | --check IMAGE]\n";
    return 2;
  }
  const std::string run = argv[1];
  const torch::Device device = kd::init_runtime({"cpu", 1, 0, false, "fp32"});
  std::vector<std::unique_ptr<kd::ModelRunner>> runners;
  runners.push_back(std::make_unique<kd::ModelRunner>("model", run, kd::load_model(run)));
  kd::Service service(std::move(runners), kd::ServiceOptions{});

  if (argc > 3 && std::string(argv[2]) == "--check") {
    // Service::handle is the whole API without sockets: a request in, a response out.
    std::ifstream f(argv[3], std::ios::binary);
    kd::HttpRequest request;
    request.method = "POST";
    request.path = "/v2/models/model/image";
    request.body.assign(std::istreambuf_iterator<char>(f), {});
    const kd::HttpResponse response = service.handle(request);
    std::cout << response.status << " " << response.body << "\n";
    return response.status == 200 ? 0 : 1;
  }
  kd::HttpOptions http;
  http.port = argc > 2 ? std::stoi(argv[2]) : 8080;
  kd::HttpServer server(service, http);
  const int port = server.bind();
  std::cout << "serving " << run << " on http://127.0.0.1:" << port
            << "/ (POST /v2/models/model/infer)\n";
  server.run();
  return 0;
} catch (const std::exception& e) {
  std::cerr << "serve_my_run: " << e.what() << "\n";
  return 1;
}
