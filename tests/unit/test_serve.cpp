// The serving pieces on their own: base64, image headers, the batcher's gathering and splitting,
// its bounded queue, and the Prometheus rendering.
#include <atomic>
#include <thread>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "kd/core/base64.h"
#include "kd/core/error.h"
#include "kd/data/image.h"
#include "kd/serve/batcher.h"
#include "kd/serve/metrics.h"

namespace kd {
namespace {

TEST(Base64, RoundTripsEveryLengthAndRejectsJunk) {
  std::string bytes;
  for (int n = 0; n < 40; ++n) {
    EXPECT_EQ(base64_decode(base64_encode(bytes)), bytes) << n;
    bytes += static_cast<char>(n * 37);
  }
  EXPECT_EQ(base64_encode("hello"), "aGVsbG8=");   // as Python's base64.b64encode
  EXPECT_EQ(base64_decode("aGVs\nbG8"), "hello");  // padding optional, whitespace ignored
  EXPECT_THROW(base64_decode("aGVs*G8="), Error);
  EXPECT_THROW(base64_decode("aGVsb"), Error);  // a lone final character
  EXPECT_THROW(base64_decode("aG=Vs"), Error);  // data after padding
}

TEST(EncodedImage, ReadsPngAndJpegHeadersWithoutDecoding) {
  std::string png = "\x89PNG\r\n\x1a\n";
  png += std::string("\0\0\0\x0dIHDR", 8);
  png += std::string("\0\0\x01\x2c\0\0\0\xc8", 8);  // 300 x 200
  EXPECT_EQ(encoded_image_size(png).width, 300);
  EXPECT_EQ(encoded_image_size(png).height, 200);
  // SOI, an APP0 segment of 4 bytes, then SOF0: length 17, precision 8, height 480, width 640.
  std::string jpeg("\xff\xd8\xff\xe0\x00\x04\x00\x00\xff\xc0\x00\x11\x08\x01\xe0\x02\x80", 17);
  EXPECT_EQ(encoded_image_size(jpeg).width, 640);
  EXPECT_EQ(encoded_image_size(jpeg).height, 480);
  EXPECT_THROW(encoded_image_size("GIF89a........................"), Error);
  EXPECT_THROW(encoded_image_size(std::string("\xff\xd8\xff\xd9", 4)), Error);
  // The header is checked against the limit before any decoding is tried.
  EXPECT_THROW(decode_image(png, ImageOptions{1, 28, 28}, 300 * 200 - 1), Error);
}

TEST(Batcher, GathersConcurrentRequestsAndSplitsTheirRows) {
  std::atomic<int> batches{0};
  std::atomic<int64_t> largest{0};
  BatchOptions opts;
  opts.max_batch = 8;
  opts.max_wait = std::chrono::milliseconds(500);  // never reached: 8 rows fill the batch
  Batcher batcher([](const torch::Tensor& x) { return x * 2; }, opts,
                  [&](int64_t size, double) {
                    ++batches;
                    largest = std::max<int64_t>(largest, size);
                  });
  // Eight requests announced (being parsed), then submitted one by one: the worker waits for them.
  std::vector<Batcher::Arrival> arrivals;
  for (int i = 0; i < 8; ++i) arrivals.push_back(batcher.expect());
  std::vector<std::future<torch::Tensor>> results;
  for (int i = 0; i < 8; ++i)
    results.push_back(batcher.submit(torch::full({1, 3}, static_cast<float>(i)),
                                     &arrivals[static_cast<size_t>(i)]));
  for (int i = 0; i < 8; ++i)
    EXPECT_TRUE(torch::equal(results[static_cast<size_t>(i)].get(), torch::full({1, 3}, 2.0f * i)));
  EXPECT_EQ(batches.load(), 1);  // the 8 rows filled one batch before the wait ran out
  EXPECT_EQ(largest.load(), 8);
  // Nothing announced: a lone request runs at once instead of waiting max_wait for company.
  const auto start = std::chrono::steady_clock::now();
  batcher.submit(torch::ones({1, 3})).get();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(400));
  // A request larger than max_batch runs alone, whole.
  auto big = batcher.submit(torch::ones({20, 3})).get();
  EXPECT_EQ(big.size(0), 20);
}

TEST(Batcher, RefusesWorkWhenTheQueueIsFullAndPassesErrorsOn) {
  std::atomic<bool> release{false};
  BatchOptions opts;
  opts.max_batch = 1;
  opts.max_queue = 2;
  opts.max_wait = std::chrono::microseconds(0);
  Batcher batcher(
      [&](const torch::Tensor& x) {
        while (!release) std::this_thread::yield();
        if (x.item<float>() < 0) throw Error("negative input");
        return x;
      },
      opts);
  auto running = batcher.submit(torch::ones({1}));
  while (batcher.depth() != 0) std::this_thread::yield();  // the worker took it and is blocked
  auto a = batcher.submit(torch::full({1}, -1.0f));
  auto b = batcher.submit(torch::ones({1}));
  EXPECT_THROW(batcher.submit(torch::ones({1})), QueueFull);
  release = true;
  EXPECT_EQ(running.get().item<float>(), 1);
  EXPECT_THROW(a.get(), Error);  // one failing batch fails only its own requests
  EXPECT_EQ(b.get().item<float>(), 1);
}

TEST(Metrics, RendersCountersAndCumulativeHistograms) {
  Metrics m;
  m.request("cls", "infer", 200, 0.003);
  m.request("cls", "infer", 200, 0.02);
  m.request("cls", "infer", 400, 0.0001);
  m.batch("cls", 3, 0.001);
  m.set_queue_depth([] { return std::vector<std::pair<std::string, int64_t>>{{"cls", 2}}; });
  const std::string text = m.render();
  EXPECT_NE(text.find("kd_http_requests_total{model=\"cls\",route=\"infer\",code=\"200\"} 2"),
            std::string::npos);
  EXPECT_NE(text.find("kd_http_errors_total{model=\"cls\",code=\"400\"} 1"), std::string::npos);
  EXPECT_NE(
      text.find(
          "kd_http_request_duration_seconds_bucket{model=\"cls\",route=\"infer\",le=\"0.005\"} 2"),
      std::string::npos);
  EXPECT_NE(
      text.find(
          "kd_http_request_duration_seconds_bucket{model=\"cls\",route=\"infer\",le=\"+Inf\"} 3"),
      std::string::npos);
  EXPECT_NE(text.find("kd_batch_size_bucket{model=\"cls\",le=\"2\"} 0"), std::string::npos);
  EXPECT_NE(text.find("kd_batch_size_bucket{model=\"cls\",le=\"4\"} 1"), std::string::npos);
  EXPECT_NE(text.find("kd_queue_depth{model=\"cls\"} 2"), std::string::npos);
}

}  // namespace
}  // namespace kd
