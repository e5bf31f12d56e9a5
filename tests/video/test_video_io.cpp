// VideoReader, VideoWriter and the per-frame results writers, on synthetic
// videos: round trips per container, --every/--start-s/--max-frames, live
// (camera) reading, broken input, temporaries, the JSON Lines and MOTS files.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "maskrcnn/error.h"
#include "maskrcnn/rle.h"
#include "maskrcnn/video.h"
#include "support/synthetic_video.h"
#include "support/temp_dir.h"

namespace fs = std::filesystem;
using maskrcnn::testing::synthetic_frame;
using maskrcnn::testing::TempDir;
using maskrcnn::testing::write_synthetic_video;

namespace maskrcnn {
namespace {

double mean_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kFloat) - b.to(at::kFloat)).abs().mean().item<double>();
}

std::vector<VideoFrame> read_all(VideoReader& video) {
  std::vector<VideoFrame> frames;
  for (VideoFrame f; video.next(f);) frames.push_back(f);
  return frames;
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream f(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(f, line);) lines.push_back(line);
  return lines;
}

class VideoRoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(VideoRoundTrip, FramesSizeRateAndPixelsSurvive) {
  TempDir dir("video_io");
  const std::string path = dir / ("clip" + GetParam());
  write_synthetic_video(path, 24, 96, 160, 12.0);
  auto video = VideoReader::open_file(path);
  EXPECT_EQ(video.width(), 160);
  EXPECT_EQ(video.height(), 96);
  EXPECT_NEAR(video.fps(), 12.0, 0.01);
  EXPECT_EQ(video.frame_count(), 24);
  EXPECT_EQ(video.frames_to_return(), 24);
  auto frames = read_all(video);
  ASSERT_EQ(frames.size(), 24u);
  EXPECT_FALSE(video.truncated());
  for (size_t k = 0; k < frames.size(); ++k) {
    EXPECT_EQ(frames[k].index, static_cast<int64_t>(k));
    EXPECT_NEAR(frames[k].time_s, k / 12.0, 1e-9);
    ASSERT_EQ(frames[k].rgb.sizes(), (std::vector<int64_t>{3, 96, 160}));
    // Lossy codecs: close to what was written, and far from the other frames.
    EXPECT_LT(mean_abs_diff(frames[k].rgb, synthetic_frame(k, 96, 160)), 6.0) << k;
  }
  EXPECT_GT(mean_abs_diff(frames[0].rgb, synthetic_frame(12, 96, 160)), 6.0);
}

INSTANTIATE_TEST_SUITE_P(Containers, VideoRoundTrip, ::testing::Values(".mp4", ".mkv", ".avi", ".webm"),
                         [](const auto& info) { return info.param.substr(1); });

TEST(VideoReader, EveryStartAndMaxFramesPickTheRightFrames) {
  TempDir dir("video_io");
  const std::string path = dir / "clip.mp4";
  write_synthetic_video(path, 40, 96, 128, 10.0);
  auto all = VideoReader::open_file(path);
  auto reference = read_all(all);
  ASSERT_EQ(reference.size(), 40u);

  VideoReadOptions o;
  o.every = 3;
  o.start_s = 0.5;  // frame 5 at 10 fps
  auto video = VideoReader::open_file(path, o);
  EXPECT_EQ(video.frames_to_return(), 12);  // 5, 8, ..., 38
  auto picked = read_all(video);
  ASSERT_EQ(picked.size(), 12u);
  for (size_t i = 0; i < picked.size(); ++i) {
    const int64_t index = 5 + 3 * static_cast<int64_t>(i);
    EXPECT_EQ(picked[i].index, index);
    // The decoder lands exactly on the frame (a seek, then every third frame).
    EXPECT_TRUE(picked[i].rgb.equal(reference[index].rgb)) << "frame " << index;
  }
  o.max_frames = 4;
  auto capped = VideoReader::open_file(path, o);
  EXPECT_EQ(capped.frames_to_return(), 4);
  EXPECT_EQ(read_all(capped).size(), 4u);
  EXPECT_FALSE(capped.truncated());

  o = {};
  o.start_s = 10;  // past the end
  EXPECT_THROW(VideoReader::open_file(path, o), Error);
}

TEST(VideoReader, InterruptStopsReading) {
  TempDir dir("video_io");
  const std::string path = dir / "clip.avi";
  write_synthetic_video(path, 10, 64, 64);
  std::atomic<bool> stop{false};
  VideoReadOptions o;
  o.interrupt = &stop;
  auto video = VideoReader::open_file(path, o);
  VideoFrame f;
  ASSERT_TRUE(video.next(f));
  ASSERT_TRUE(video.next(f));
  stop = true;
  EXPECT_FALSE(video.next(f));
  EXPECT_EQ(video.frames_returned(), 2);
  EXPECT_FALSE(video.truncated());
}

TEST(VideoReader, BrokenInputGivesOneClearError) {
  TempDir dir("video_io");
  auto message = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  const std::string missing = dir / "missing.mp4";
  EXPECT_NE(message([&] { VideoReader::open_file(missing); }).find(missing + ": no such file"), std::string::npos);
  const std::string text = dir / "notes.mp4";
  std::ofstream(text) << "these are notes, not a video\n";
  const std::string m = message([&] { VideoReader::open_file(text); });
  EXPECT_NE(m.find(text), std::string::npos) << m;
  EXPECT_NE(m.find("not a video"), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  const std::string cam = message([&] { VideoReader::open_camera("97"); });
  EXPECT_NE(cam.find("camera 97"), std::string::npos) << cam;
  EXPECT_NE(cam.find("/dev/video97"), std::string::npos) << cam;
  VideoReadOptions small;
  small.max_pixels = 1000;
  const std::string clip = dir / "clip.avi";
  write_synthetic_video(clip, 3, 64, 64);
  EXPECT_NE(message([&] { VideoReader::open_file(clip, small); }).find("over the limit"), std::string::npos);
}

TEST(VideoReader, TruncatedFileGivesTheFramesBeforeTheDamage) {
  TempDir dir("video_io");
  const std::string path = dir / "clip.avi";
  write_synthetic_video(path, 30, 96, 128);
  fs::resize_file(path, fs::file_size(path) * 6 / 10);
  auto video = VideoReader::open_file(path);
  EXPECT_EQ(video.frame_count(), 30);  // the header still says 30
  auto frames = read_all(video);
  EXPECT_GT(frames.size(), 5u);
  EXPECT_LT(frames.size(), 30u);
  EXPECT_TRUE(video.truncated());
  EXPECT_EQ(video.end_index(), static_cast<int64_t>(frames.size()));
  for (size_t k = 0; k < frames.size(); ++k)
    EXPECT_LT(mean_abs_diff(frames[k].rgb, synthetic_frame(k, 96, 128)), 6.0) << k;
}

TEST(VideoReader, LiveSourceHandsOverTheNewestFrameAndCountsTheDropped) {
  TempDir dir("video_io");
  const std::string path = dir / "clip.avi";
  write_synthetic_video(path, 120, 64, 96);
  // A file read as a camera: the grabber decodes as fast as it can while this
  // slow consumer takes a frame every 20 ms.
  auto video = VideoReader::open_camera(path);
  EXPECT_TRUE(video.is_camera());
  EXPECT_EQ(video.frame_count(), -1);
  std::vector<int64_t> indices;
  for (VideoFrame f; video.next(f);) {
    indices.push_back(f.index);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_FALSE(indices.empty());
  for (size_t i = 1; i < indices.size(); ++i) EXPECT_GT(indices[i], indices[i - 1]);
  EXPECT_LT(indices.size(), 120u);
  EXPECT_EQ(static_cast<int64_t>(indices.size()) + video.frames_dropped(), indices.back() + 1);
}

TEST(VideoWriter, WritesToATemporaryAndRenamesWhenClosed) {
  TempDir dir("video_io");
  const std::string path = dir / "out.mp4";
  {
    VideoWriter out(path, 64, 48, 5);
    out.write(synthetic_frame(0, 48, 64));
    out.write(synthetic_frame(1, 48, 64));
    EXPECT_FALSE(fs::exists(path));  // only the temporary so far
    EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
    EXPECT_THROW(out.write(at::zeros({3, 10, 10}, at::kByte)), Error);
  }  // the destructor finalises, as when an exception unwinds
  ASSERT_TRUE(fs::exists(path));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
  auto video = VideoReader::open_file(path);
  EXPECT_EQ(read_all(video).size(), 2u);
  EXPECT_THROW(VideoWriter(dir / "out.txt", 64, 48, 5), Error);
  EXPECT_THROW(VideoWriter(dir / "no/such/folder/out.mp4", 64, 48, 5), Error);
  // Odd sizes write, rounded down to even (4:2:0).
  write_synthetic_video(dir / "odd.mp4", 3, 49, 65);
  auto odd = VideoReader::open_file(dir / "odd.mp4");
  EXPECT_EQ(odd.width(), 64);
  EXPECT_EQ(odd.height(), 48);
  EXPECT_EQ(read_all(odd).size(), 3u);
}

TEST(VideoPath, ByExtension) {
  EXPECT_TRUE(is_video_path("a/b/clip.MP4"));
  EXPECT_TRUE(is_video_path("x.mkv"));
  EXPECT_TRUE(is_video_path("x.avi"));
  EXPECT_FALSE(is_video_path("photo.jpg"));
  EXPECT_FALSE(is_video_path("mp4"));
}

// Two overlapping squares (the first scores higher) on a 20 x 30 frame.
Detections overlapping_pair() {
  Detections d;
  d.image_height = 20;
  d.image_width = 30;
  d.boxes = at::tensor({2.f, 2.f, 12.f, 12.f, 8.f, 4.f, 18.f, 14.f}).view({2, 4});
  d.scores = at::tensor({0.9f, 0.7f});
  d.labels = at::tensor({1, 3}, at::kLong);
  d.masks = {{2, 2, at::ones({10, 10})}, {8, 4, at::ones({10, 10})}};
  return d;
}

TEST(VideoResults, JsonLinesCarryTrackIdsAndTheImageRecords) {
  TempDir dir("video_io");
  const std::string path = dir / "tracks.jsonl";
  VideoFrame frame;
  frame.index = 7;
  frame.time_s = 0.7;
  frame.rgb = at::zeros({3, 20, 30}, at::kByte);
  {
    VideoJsonLinesWriter out(path, {"bg", "circle", "square", "triangle"});
    out.add_frame(frame, overlapping_pair(), {4, 9});
    frame.index = 8;
    Detections none;
    none.image_height = 20;
    none.image_width = 30;
    none.boxes = at::zeros({0, 4});
    none.scores = at::zeros({0});
    none.labels = at::zeros({0}, at::kLong);
    out.add_frame(frame, none, {});
    EXPECT_THROW(out.add_frame(frame, overlapping_pair(), {1}), Error);
    EXPECT_FALSE(fs::exists(path));
    out.close();
  }
  auto lines = lines_of(path);
  ASSERT_EQ(lines.size(), 2u);
  auto first = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(first["frame"], 7);
  EXPECT_DOUBLE_EQ(first["time_s"].get<double>(), 0.7);
  EXPECT_EQ(first["width"], 30);
  EXPECT_EQ(first["height"], 20);
  ASSERT_EQ(first["detections"].size(), 2u);
  const auto& d = first["detections"][1];
  EXPECT_EQ(d["track_id"], 9);
  EXPECT_EQ(d["category_id"], 3);
  EXPECT_EQ(d["category_name"], "triangle");
  EXPECT_EQ(d["bbox"], nlohmann::json({8.0, 4.0, 10.0, 10.0}));
  EXPECT_FALSE(d.contains("image_id"));
  const Rle rle = rle_from_string(d["segmentation"]["counts"].get<std::string>(), 20, 30);
  EXPECT_EQ(rle_area(rle), 100u);
  EXPECT_EQ(nlohmann::json::parse(lines[1])["detections"].size(), 0u);
}

TEST(VideoResults, MotsLinesHaveNoOverlapAndClassTrackIds) {
  TempDir dir("video_io");
  const std::string path = dir / "tracks.txt";
  VideoFrame frame;
  frame.index = 3;
  frame.rgb = at::zeros({3, 20, 30}, at::kByte);
  MotsWriter out(path);
  out.add_frame(frame, overlapping_pair(), {4, 1009});
  out.close();
  auto lines = lines_of(path);
  ASSERT_EQ(lines.size(), 2u);
  std::vector<Rle> rles;
  std::set<int64_t> ids;
  for (const auto& line : lines) {
    std::istringstream in(line);
    int64_t f, id, cls, h, w;
    std::string counts;
    ASSERT_TRUE(in >> f >> id >> cls >> h >> w >> counts) << line;
    EXPECT_EQ(f, 3);
    EXPECT_EQ(h, 20);
    EXPECT_EQ(w, 30);
    EXPECT_EQ(id / 1000, cls);
    ids.insert(id);
    rles.push_back(rle_from_string(counts, 20, 30));
  }
  EXPECT_EQ(ids, (std::set<int64_t>{1004, 3009}));
  // The better detection keeps its 100 pixels; the other loses the shared 4 x 8.
  EXPECT_EQ(rle_area(rles[0]), 100u);
  EXPECT_EQ(rle_area(rles[1]), 100u - 4 * 8);
  EXPECT_EQ(rle_area(rle_merge(rles, /*intersect=*/true)), 0u);
}

}  // namespace
}  // namespace maskrcnn
