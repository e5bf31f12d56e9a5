// Image decoding with checks OpenCV does not make itself: a format sniffed from
// the bytes, dimensions read from the header before decoding (so a huge image
// is refused up front) and JPEG truncation (OpenCV only warns on stderr).
#include "maskrcnn/image.h"

#include <ATen/ATen.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>

#include "io/atomic_file.h"
#include "maskrcnn/error.h"

namespace maskrcnn {
namespace {

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open image (missing or unreadable)");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw Error(path + ": read error");
  return bytes;
}

// The encoded bytes: a pointer and a length (read_image's buffer or the caller's).
struct Bytes {
  const uint8_t* ptr;
  size_t len;
  size_t size() const { return len; }
  uint8_t operator[](size_t i) const { return ptr[i]; }
};

bool starts_with(const Bytes& b, std::initializer_list<uint8_t> magic) {
  if (b.size() < magic.size()) return false;
  size_t i = 0;
  for (uint8_t m : magic)
    if (b[i++] != m) return false;
  return true;
}

struct Dims {
  int64_t width, height;
};

// Width/height from a JPEG's SOFn segment, or nullopt if none is found.
std::optional<Dims> jpeg_dims(const Bytes& b) {
  size_t i = 2;
  while (i + 9 < b.size()) {
    if (b[i] != 0xFF) return std::nullopt;
    uint8_t marker = b[i + 1];
    if (marker == 0xFF) { ++i; continue; }
    if (marker == 0xD8 || (marker >= 0xD0 && marker <= 0xD7)) { i += 2; continue; }
    const size_t len = (size_t(b[i + 2]) << 8) | b[i + 3];
    const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 &&
                     marker != 0xCC;
    if (sof) return Dims{(int64_t(b[i + 7]) << 8) | b[i + 8], (int64_t(b[i + 5]) << 8) | b[i + 6]};
    i += 2 + len;
  }
  return std::nullopt;
}

bool jpeg_has_end_marker(const Bytes& b) {
  // Some writers pad after EOI; look at the last few bytes.
  for (size_t k = b.size(); k >= 2 && b.size() - k < 64; --k)
    if (b[k - 2] == 0xFF && b[k - 1] == 0xD9) return true;
  return false;
}

}  // namespace

at::Tensor read_image(const std::string& path, const ImageReadOptions& options) {
  auto file = read_file(path);
  return decode_image(file.data(), file.size(), path, options);
}

at::Tensor decode_image(const uint8_t* data, size_t size, const std::string& path,
                        const ImageReadOptions& options) {
  const Bytes bytes{data, size};
  if (size == 0) throw Error(path + ": empty file, not an image");
  std::optional<Dims> dims;
  const bool is_jpeg = starts_with(bytes, {0xFF, 0xD8, 0xFF});
  const bool is_png = starts_with(bytes, {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A});
  const bool is_bmp = starts_with(bytes, {'B', 'M'});
  if (is_jpeg) {
    dims = jpeg_dims(bytes);
    if (!dims) throw Error(path + ": corrupt JPEG (no frame header)");
    if (!jpeg_has_end_marker(bytes)) throw Error(path + ": truncated JPEG (no end-of-image marker)");
  } else if (is_png) {
    if (bytes.size() < 33) throw Error(path + ": truncated PNG header");
    auto be32 = [&](size_t o) {
      return (int64_t(bytes[o]) << 24) | (int64_t(bytes[o + 1]) << 16) |
             (int64_t(bytes[o + 2]) << 8) | int64_t(bytes[o + 3]);
    };
    dims = Dims{be32(16), be32(20)};
  } else if (is_bmp) {
    if (bytes.size() < 26) throw Error(path + ": truncated BMP header");
    auto le32 = [&](size_t o) {
      return int64_t(int32_t(uint32_t(bytes[o]) | (uint32_t(bytes[o + 1]) << 8) | (uint32_t(bytes[o + 2]) << 16) |
                             (uint32_t(bytes[o + 3]) << 24)));
    };
    dims = Dims{std::abs(le32(18)), std::abs(le32(22))};  // a negative height means top-down rows
  } else {
    // OpenCV would try every decoder it links (DICOM, TIFF, OpenEXR...) on
    // unknown bytes, and some of them abort the process on hostile input.
    throw Error(path + ": not a JPEG, PNG or BMP image");
  }
  {
    if (dims->width <= 0 || dims->height <= 0)
      throw Error(path + ": image has no pixels (" + std::to_string(dims->width) + "x" +
                  std::to_string(dims->height) + ")");
    // Each side is below 2^32 (JPEG: 2^16), so the product fits in a double exactly enough.
    if (double(dims->width) * double(dims->height) > double(options.max_pixels))
      throw Error(path + ": image is " + std::to_string(dims->width) + "x" +
                  std::to_string(dims->height) + " pixels, more than the limit of " +
                  std::to_string(options.max_pixels));
  }
  if (size > static_cast<size_t>(std::numeric_limits<int>::max()))
    throw Error(path + ": file larger than 2 GB, not decoded");
  cv::Mat raw = cv::Mat(1, static_cast<int>(size), CV_8UC1, const_cast<uint8_t*>(data));
  cv::Mat img;
  try {
    img = cv::imdecode(raw, cv::IMREAD_UNCHANGED | cv::IMREAD_IGNORE_ORIENTATION);
  } catch (const cv::Exception& e) {
    throw Error(path + ": cannot decode image (" + std::string(e.err) + ")");
  }
  if (img.empty())
    throw Error(path + ": corrupt image data");
  if (int64_t(img.cols) * img.rows > options.max_pixels)
    throw Error(path + ": image is larger than the limit of " + std::to_string(options.max_pixels) +
                " pixels");
  if (img.depth() == CV_16U) img.convertTo(img, CV_8U, 1.0 / 257.0);
  else if (img.depth() != CV_8U) img.convertTo(img, CV_8U);
  cv::Mat rgb;
  switch (img.channels()) {
    case 1: cv::cvtColor(img, rgb, cv::COLOR_GRAY2RGB); break;
    case 3: cv::cvtColor(img, rgb, cv::COLOR_BGR2RGB); break;
    case 4: cv::cvtColor(img, rgb, cv::COLOR_BGRA2RGB); break;
    default: throw Error(path + ": unsupported channel count " + std::to_string(img.channels()));
  }
  auto hwc = at::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, at::kByte);
  return hwc.permute({2, 0, 1}).contiguous();
}

at::Tensor to_float_image(const at::Tensor& rgb_u8) { return rgb_u8.to(at::kFloat).div_(255.0); }

void write_png(const std::string& path, const at::Tensor& rgb_u8) {
  TORCH_CHECK(rgb_u8.dim() == 3 && rgb_u8.size(0) == 3 && rgb_u8.scalar_type() == at::kByte,
              "write_png expects uint8 [3, H, W]");
  auto hwc = rgb_u8.permute({1, 2, 0}).contiguous();
  cv::Mat rgb(static_cast<int>(hwc.size(0)), static_cast<int>(hwc.size(1)), CV_8UC3, hwc.data_ptr());
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, cv::COLOR_RGB2BGR);
  std::vector<uint8_t> buf;
  if (!cv::imencode(".png", bgr, buf)) throw Error(path + ": PNG encoding failed");
  io::write_file_atomic(path, buf.data(), buf.size());
}

}  // namespace maskrcnn
