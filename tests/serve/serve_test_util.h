// Helpers of the serve tests: a tiny random model written as a checkpoint
// with its sidecar (ResNet-18, small heads, 96-128 px inputs: a forward pass
// takes tens of milliseconds), PNG bytes, the library's own predict JSON for
// comparison, and raw loopback sockets for clients httplib will not imitate.
#pragma once
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>

#include "maskrcnn/maskrcnn.h"
#include "support/tiny_model.h"

namespace maskrcnn::testing {

inline std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// PNG bytes of an h x w image: seeded noise (textured: proposals everywhere),
// or one flat colour (a PNG of ~100 bytes).
inline std::string png_bytes(const std::string& dir, int64_t h, int64_t w, bool noise = true, uint64_t seed = 1) {
  at::Tensor rgb;
  if (noise) {
    at::manual_seed(seed);
    rgb = at::randint(0, 256, {3, h, w}, at::TensorOptions().dtype(at::kByte));
  } else {
    rgb = at::full({3, h, w}, 128, at::TensorOptions().dtype(at::kByte));
  }
  const std::string path = dir + "/img_" + std::to_string(h) + "x" + std::to_string(w) + "_" +
                           std::to_string(noise) + "_" + std::to_string(seed) + ".png";
  write_png(path, rgb);
  return read_bytes(path);
}

// What `maskrcnn predict --output-json` writes for these bytes: the records of
// CocoResultsWriter for a model loaded with these thresholds.
inline nlohmann::json library_records(const std::string& weights, const std::string& bytes,
                                      double score_thresh = 0.05, int max_detections = 100,
                                      double mask_thresh = 0.5) {
  ModelOverrides o;
  o.box_score_thresh = score_thresh;
  o.box_detections_per_img = max_detections;
  MaskRCNN model = load_model(weights, o);
  const at::Tensor rgb = decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "reference");
  const Detections dets = model.predict({rgb}).at(0);
  CocoResultsWriter writer;
  writer.set_category_names(model.class_names());
  writer.add(0, "reference.png", dets, mask_thresh);
  return nlohmann::json::parse(writer.to_string());
}

// The served detections of one image against the library's records.
inline void expect_same_detections(const nlohmann::json& served, const nlohmann::json& records) {
  ASSERT_TRUE(served.is_array());
  ASSERT_EQ(served.size(), records.size());
  for (size_t i = 0; i < served.size(); ++i) {
    const auto& s = served[i];
    const auto& r = records[i];
    EXPECT_FALSE(s.contains("image_id")) << i;
    EXPECT_FALSE(s.contains("file_name")) << i;
    EXPECT_EQ(s.at("category_id"), r.at("category_id")) << i;
    EXPECT_EQ(s.at("category_name"), r.at("category_name")) << i;
    EXPECT_NEAR(s.at("score").get<double>(), r.at("score").get<double>(), 1e-5) << i;
    for (int k = 0; k < 4; ++k)
      EXPECT_NEAR(s.at("bbox")[k].get<double>(), r.at("bbox")[k].get<double>(), 1e-4) << i;
    EXPECT_EQ(s.at("segmentation").at("size"), r.at("segmentation").at("size")) << i;
    EXPECT_EQ(s.at("segmentation").at("counts"), r.at("segmentation").at("counts")) << i;
  }
}

// Polls `done` every 10 ms for at most `timeout`.
inline bool eventually(const std::function<bool()>& done,
                       std::chrono::milliseconds timeout = std::chrono::milliseconds(30000)) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return done();
}

// A TCP connection to 127.0.0.1:port with a 30 s receive timeout; -1 on failure.
inline int connect_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int one = 1;  // byte-by-byte sends go out at once, not after the peer's delayed ACK
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

inline bool send_all(int fd, const char* data, size_t n) {
  while (n > 0) {
    const ssize_t k = ::send(fd, data, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    data += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

// Everything the peer sends until it closes (or 30 s of silence).
inline std::string receive_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t k = ::recv(fd, buf, sizeof buf, 0);
    if (k <= 0) break;
    out.append(buf, static_cast<size_t>(k));
  }
  return out;
}

// The status code of a raw HTTP/1.1 answer ("HTTP/1.1 200 OK..."), or -1.
inline int status_of(const std::string& response) {
  if (response.rfind("HTTP/1.", 0) != 0 || response.size() < 12) return -1;
  return std::atoi(response.substr(9, 3).c_str());
}

// The body of a raw HTTP answer (after the blank line).
inline std::string body_of(const std::string& response) {
  const auto pos = response.find("\r\n\r\n");
  return pos == std::string::npos ? std::string() : response.substr(pos + 4);
}

}  // namespace maskrcnn::testing
