// `maskrcnn predict` on videos: the annotated video, JSON Lines and MOTS
// outputs against `predict` on each frame saved as an image; --every and
// --max-frames; a camera (a file read live); SIGINT, a truncated file and
// other broken input: one-line errors and finalised outputs.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <ATen/ATen.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "maskrcnn/maskrcnn.h"
#include "support/cli.h"
#include "support/synthetic_video.h"
#include "support/tiny_model.h"

namespace fs = std::filesystem;
using namespace maskrcnn::testing;

namespace maskrcnn {
namespace {

std::vector<nlohmann::json> json_lines(const std::string& path) {
  std::ifstream f(path);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(f, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

int64_t count_frames(const std::string& path) {
  auto video = VideoReader::open_file(path);
  int64_t n = 0;
  for (VideoFrame f; video.next(f);) ++n;
  return n;
}

class PredictVideoCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fresh_test_dir("maskrcnn_video_cli");
    weights_ = write_tiny_model(dir_.string());
  }
  void TearDown() override { fs::remove_all(dir_); }
  CmdResult run(const std::string& args) { return run_maskrcnn(args, dir_.string()); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string predict() const { return "predict --threads 2 --weights " + weights_ + " "; }
  // Only what the test made and the named outputs: no temporaries left.
  void expect_no_temporaries() const {
    for (const auto& e : fs::directory_iterator(dir_))
      EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
  }
  static void expect_one_line_error(const CmdResult& r, const std::string& needle) {
    EXPECT_NE(r.rc, 0);
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("Exception raised from"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("terminate called"), std::string::npos) << r.err;
  }

  fs::path dir_;
  std::string weights_;
};

TEST_F(PredictVideoCli, OutputsAgreeWithPredictOnEachFrame) {
  write_synthetic_video(path("clip.mp4"), 12, 96, 128, 10.0);
  auto r = run(predict() + "--output-video " + path("out.mp4") + " --output-json " + path("out.jsonl") +
               " --output-mots " + path("out.txt") + " " + path("clip.mp4"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("frames/s"), std::string::npos) << r.err;  // the progress bar
  expect_no_temporaries();

  // The annotated video: every frame, at the input's size and rate.
  auto out = VideoReader::open_file(path("out.mp4"));
  EXPECT_EQ(out.width(), 128);
  EXPECT_EQ(out.height(), 96);
  EXPECT_NEAR(out.fps(), 10.0, 0.01);
  EXPECT_EQ(count_frames(path("out.mp4")), 12);

  // Each frame as the model saw it, saved as a PNG, through `predict`.
  auto in = VideoReader::open_file(path("clip.mp4"));
  std::string pngs;
  for (VideoFrame f; in.next(f);) {
    const std::string png = path("frame" + std::to_string(f.index) + ".png");
    write_png(png, f.rgb);
    pngs += " " + png;
  }
  r = run(predict() + "--output-json " + path("frames.json") + pngs);
  ASSERT_EQ(r.rc, 0) << r.err;
  std::map<int64_t, std::vector<nlohmann::json>> by_image;
  for (auto& rec : nlohmann::json::parse(slurp(path("frames.json"))))
    by_image[rec["image_id"].get<int64_t>()].push_back(rec);

  const auto lines = json_lines(path("out.jsonl"));
  ASSERT_EQ(lines.size(), 12u);
  std::map<std::pair<int64_t, int64_t>, nlohmann::json> tracked;  // (frame, MOTS id) -> detection
  size_t total = 0;
  for (size_t k = 0; k < lines.size(); ++k) {
    const auto& line = lines[k];
    EXPECT_EQ(line["frame"], k);
    EXPECT_DOUBLE_EQ(line["time_s"].get<double>(), k / 10.0);
    EXPECT_EQ(line["width"], 128);
    EXPECT_EQ(line["height"], 96);
    const auto& dets = line["detections"];
    const auto& expected = by_image[static_cast<int64_t>(k)];
    ASSERT_EQ(dets.size(), expected.size()) << "frame " << k;
    ASSERT_GT(dets.size(), 0u);
    std::set<int64_t> ids;
    for (size_t i = 0; i < dets.size(); ++i) {
      for (const char* key : {"category_id", "category_name", "score", "bbox", "segmentation"})
        EXPECT_EQ(dets[i][key], expected[i][key]) << "frame " << k << " detection " << i << " " << key;
      const int64_t id = dets[i]["track_id"].get<int64_t>();
      EXPECT_GE(id, 1);
      EXPECT_TRUE(ids.insert(id).second) << "track " << id << " twice in frame " << k;
      tracked[{static_cast<int64_t>(k), dets[i]["category_id"].get<int64_t>() * 1000 + id % 1000}] = dets[i];
    }
    total += dets.size();
  }

  // MOTS: a line per instance that keeps pixels, naming a tracked detection
  // of that frame; its mask is inside that detection's own.
  std::ifstream mots(path("out.txt"));
  size_t mots_lines = 0;
  for (std::string line; std::getline(mots, line); ++mots_lines) {
    std::istringstream fields(line);
    int64_t frame, id, cls, h, w;
    std::string counts;
    ASSERT_TRUE(fields >> frame >> id >> cls >> h >> w >> counts) << line;
    EXPECT_EQ(h, 96);
    EXPECT_EQ(w, 128);
    EXPECT_EQ(id / 1000, cls);
    auto it = tracked.find({frame, id});
    ASSERT_NE(it, tracked.end()) << line;
    const Rle mine = rle_from_string(counts, 96, 128);
    const Rle whole = rle_from_string(it->second["segmentation"]["counts"].get<std::string>(), 96, 128);
    EXPECT_GT(rle_area(mine), 0u);
    EXPECT_EQ(rle_area(rle_merge({mine, whole}, true)), rle_area(mine)) << line;
  }
  EXPECT_GT(mots_lines, 12u);
  EXPECT_LE(mots_lines, total);
}

TEST_F(PredictVideoCli, EveryAndMaxFrames) {
  write_synthetic_video(path("clip.avi"), 20, 96, 128, 12.0);
  auto r = run(predict() + "--every 3 --max-frames 4 --start-s 0.25 --output-video " + path("out.mkv") +
               " --output-json " + path("out.jsonl") + " " + path("clip.avi"));
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto lines = json_lines(path("out.jsonl"));
  ASSERT_EQ(lines.size(), 4u);
  for (size_t i = 0; i < lines.size(); ++i) EXPECT_EQ(lines[i]["frame"], 3 + 3 * i);  // 0.25 s = frame 3
  auto out = VideoReader::open_file(path("out.mkv"));
  EXPECT_NEAR(out.fps(), 4.0, 0.01);  // the processed frames at fps / every
  EXPECT_EQ(count_frames(path("out.mkv")), 4);
}

TEST_F(PredictVideoCli, PrintsTrackedDetectionsWithoutOutputs) {
  write_synthetic_video(path("clip.avi"), 3, 96, 128);
  auto r = run(predict() + "--score-thresh 0.2 " + path("clip.avi"));
  ASSERT_EQ(r.rc, 0) << r.err;
  std::istringstream out(r.out);
  std::set<std::string> frames;
  for (std::string line; std::getline(out, line);) frames.insert(line.substr(0, line.find('\t')));
  EXPECT_EQ(frames, (std::set<std::string>{"0", "1", "2"}));
}

TEST_F(PredictVideoCli, CameraReadsLiveUntilTheStreamEnds) {
  write_synthetic_video(path("clip.avi"), 30, 96, 128);
  // A file through --camera: read live, newest frame first, as a camera is.
  auto r = run(predict() + "--camera " + path("clip.avi") + " --output-json " + path("out.jsonl") +
               " --output-video " + path("out.avi"));
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto lines = json_lines(path("out.jsonl"));
  ASSERT_GE(lines.size(), 1u);
  for (size_t i = 1; i < lines.size(); ++i)
    EXPECT_GT(lines[i]["frame"].get<int64_t>(), lines[i - 1]["frame"].get<int64_t>());
  EXPECT_GE(count_frames(path("out.avi")), static_cast<int64_t>(lines.size()));
  expect_no_temporaries();
}

TEST_F(PredictVideoCli, SigintFinalisesTheOutputs) {
  write_synthetic_video(path("long.avi"), 1500, 96, 128, 25.0);
  // Interrupt once the first frames are out, then check what is on disk.
  const std::string script =
      maskrcnn_bin() + " " + predict() + "--output-video " + path("out.mp4") + " --output-json " +
      path("out.jsonl") + " " + path("long.avi") + " 2>" + path("err") + " & pid=$!; " +
      "for i in $(seq 600); do [ -n \"$(find " + dir_.string() +
      " -name 'out.jsonl.tmp.*' -size +1k)\" ] && break; sleep 0.1; done; kill -INT $pid; wait $pid; echo $? >" +
      path("rc");
  ASSERT_EQ(std::system(("sh -c '" + script + "'").c_str()) == -1, false);
  EXPECT_EQ(std::stoi(slurp(path("rc"))), 130) << slurp(path("err"));
  EXPECT_NE(slurp(path("err")).find("interrupted after"), std::string::npos) << slurp(path("err"));
  const auto lines = json_lines(path("out.jsonl"));
  EXPECT_GE(lines.size(), 1u);
  EXPECT_LT(lines.size(), 1500u);
  EXPECT_EQ(count_frames(path("out.mp4")), static_cast<int64_t>(lines.size()));
  expect_no_temporaries();
}

TEST_F(PredictVideoCli, TruncatedVideoKeepsTheFramesBeforeTheDamage) {
  write_synthetic_video(path("clip.avi"), 30, 96, 128);
  fs::resize_file(path("clip.avi"), fs::file_size(path("clip.avi")) / 2);
  auto r = run(predict() + "--output-video " + path("out.mp4") + " --output-json " + path("out.jsonl") + " " +
               path("clip.avi"));
  EXPECT_EQ(r.rc, 1);
  expect_one_line_error(r, path("clip.avi") + ": the video breaks off at frame ");
  const auto lines = json_lines(path("out.jsonl"));
  EXPECT_GT(lines.size(), 3u);
  EXPECT_LT(lines.size(), 30u);
  EXPECT_EQ(count_frames(path("out.mp4")), static_cast<int64_t>(lines.size()));
  expect_no_temporaries();
}

TEST_F(PredictVideoCli, BadInputFailsWithOneLine) {
  std::ofstream(path("notes.mp4")) << "not a video";
  auto r = run(predict() + "--output-video " + path("out.mp4") + " " + path("notes.mp4"));
  expect_one_line_error(r, path("notes.mp4") + ": not a video");
  EXPECT_FALSE(fs::exists(path("out.mp4")));
  r = run(predict() + "--camera 97");
  expect_one_line_error(r, "camera 97: cannot open /dev/video97");
  write_synthetic_video(path("clip.avi"), 2, 96, 128);
  r = run(predict() + path("clip.avi") + " " + path("clip.avi"));
  expect_one_line_error(r, "one video at a time");
  r = run(predict() + "--output-dir " + path("pngs") + " " + path("clip.avi"));
  expect_one_line_error(r, "--output-dir is for images");
  write_png(path("still.png"), at::zeros({3, 8, 8}, at::kByte));
  r = run(predict() + "--output-video " + path("out.mp4") + " " + path("still.png"));
  expect_one_line_error(r, "need a video file or --camera");
  r = run(predict() + "--output-video " + path("out.gif") + " " + path("clip.avi"));
  expect_one_line_error(r, "unknown video extension");
  expect_no_temporaries();
}

TEST_F(PredictVideoCli, HelpShowsTheVideoFlagsAndDefaults) {
  auto r = run("predict --help");
  EXPECT_EQ(r.rc, 0);
  for (std::string s : {"--camera", "--every", "--max-frames", "--start-s", "--output-video", "--output-mots",
                        "--track-ttl", "8", "--track-iou", "JSON Lines"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;
}

}  // namespace
}  // namespace maskrcnn
