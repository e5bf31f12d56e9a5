// COCO evaluation benchmark (plain timing main; needs no Google Benchmark).
//
//   bench_coco_eval [--images N] [--threads T] [--train-scale]
//
// Builds a synthetic ground truth (N images of 640x480, ~7 polygon objects each,
// 80 categories) and results (100 detections per image with compressed-RLE masks)
// as JSON text in memory, then times parsing, and evaluate + accumulate +
// summarize for bbox and segm. --train-scale additionally times parsing an
// instances file shaped like instances_train2017.json (118k images, 860k
// polygon annotations, ~450 MB) and prints the peak memory.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>
#include <algorithm>

#include "maskrcnn/coco.h"
#include "maskrcnn/coco_eval.h"
#include "maskrcnn/rle.h"

using namespace maskrcnn;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

long peak_rss_mb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6) / 1024;
  return -1;
}

struct Obj {
  double cx, cy, rx, ry;
};

// A 16-vertex ellipse-like polygon (jittered), flattened x0,y0,x1,y1,...
std::vector<double> polygon(const Obj& o, std::mt19937& rng, int vertices = 16) {
  std::uniform_real_distribution<double> jit(0.9, 1.1);
  std::vector<double> xy;
  for (int i = 0; i < vertices; ++i) {
    const double a = 2 * M_PI * i / vertices;
    xy.push_back(std::round((o.cx + o.rx * jit(rng) * std::cos(a)) * 100) / 100);
    xy.push_back(std::round((o.cy + o.ry * jit(rng) * std::sin(a)) * 100) / 100);
  }
  return xy;
}

void append_numbers(std::string& s, const std::vector<double>& v) {
  char buf[32];
  s += '[';
  for (size_t i = 0; i < v.size(); ++i) {
    std::snprintf(buf, sizeof buf, i ? ",%.2f" : "%.2f", v[i]);
    s += buf;
  }
  s += ']';
}

BBox poly_box(const std::vector<double>& xy) {
  double x0 = 1e9, y0 = 1e9, x1 = -1e9, y1 = -1e9;
  for (size_t i = 0; i + 1 < xy.size(); i += 2) {
    x0 = std::min(x0, xy[i]);
    x1 = std::max(x1, xy[i]);
    y0 = std::min(y0, xy[i + 1]);
    y1 = std::max(y1, xy[i + 1]);
  }
  return {x0, y0, x1 - x0, y1 - y0};
}

void make_dataset(int num_images, int dets_per_image, bool with_results, int polygon_vertices,
                  std::string& gt, std::string& dt) {
  const int W = 640, H = 480;
  std::mt19937 rng(1234);
  std::uniform_real_distribution<double> U(0, 1);
  gt = "{\"info\":{},\"images\":[";
  for (int i = 1; i <= num_images; ++i) {
    char buf[128];
    std::snprintf(buf, sizeof buf, "%s{\"id\":%d,\"width\":%d,\"height\":%d,\"file_name\":\"%012d.jpg\"}",
                  i > 1 ? "," : "", i, W, H, i);
    gt += buf;
  }
  gt += "],\"categories\":[";
  for (int c = 1; c <= 80; ++c) gt += (c > 1 ? "," : "") + std::string("{\"id\":") + std::to_string(c) + ",\"name\":\"c" + std::to_string(c) + "\"}";
  gt += "],\"annotations\":[";
  dt = "[";
  int ann_id = 0;
  bool first_dt = true;
  for (int i = 1; i <= num_images; ++i) {
    const int n = 4 + static_cast<int>(rng() % 7);  // 4..10, ~7
    std::vector<std::pair<int, Obj>> objs;
    for (int j = 0; j < n; ++j) {
      const double s = std::exp(std::log(4.0) + U(rng) * std::log(60.0));  // radius 4..240
      Obj o{U(rng) * W, U(rng) * H, s * (0.6 + 0.8 * U(rng)), s * (0.6 + 0.8 * U(rng))};
      const int c = 1 + static_cast<int>(rng() % 80);
      objs.push_back({c, o});
      const auto xy = polygon(o, rng, polygon_vertices);
      const BBox b = poly_box(xy);
      char buf[160];
      const char* sep = ann_id ? "," : "";
      ++ann_id;
      std::snprintf(buf, sizeof buf, "%s{\"id\":%d,\"image_id\":%d,\"category_id\":%d,\"iscrowd\":0,\"area\":%.2f,\"bbox\":",
                    sep, ann_id, i, c, M_PI * o.rx * o.ry);
      gt += buf;
      append_numbers(gt, {b[0], b[1], b[2], b[3]});
      gt += ",\"segmentation\":[";
      append_numbers(gt, xy);
      gt += "]}";
    }
    if (!with_results) continue;
    for (int d = 0; d < dets_per_image; ++d) {
      int c;
      Obj o;
      if (d < 3 * n) {  // near a ground truth (right or wrong class)
        const auto& g = objs[static_cast<size_t>(d % n)];
        c = (rng() % 4) ? g.first : 1 + static_cast<int>(rng() % 80);
        o = {g.second.cx + (U(rng) - .5) * g.second.rx * 0.4, g.second.cy + (U(rng) - .5) * g.second.ry * 0.4,
             g.second.rx * (0.8 + 0.4 * U(rng)), g.second.ry * (0.8 + 0.4 * U(rng))};
      } else {
        c = 1 + static_cast<int>(rng() % 80);
        o = {U(rng) * W, U(rng) * H, 5 + 60 * U(rng), 5 + 60 * U(rng)};
      }
      const auto xy = polygon(o, rng, 12);
      const BBox b = poly_box(xy);
      const Rle m = rle_from_polygon(xy, H, W);
      char buf[160];
      std::snprintf(buf, sizeof buf, "%s{\"image_id\":%d,\"category_id\":%d,\"score\":%.4f,\"bbox\":",
                    first_dt ? "" : ",", i, c, U(rng));
      first_dt = false;
      dt += buf;
      append_numbers(dt, {b[0], b[1], b[2], b[3]});
      std::string counts = rle_to_string(m), esc;
      for (char ch : counts) {
        if (ch == '\\') esc += '\\';
        esc += ch;
      }
      dt += ",\"segmentation\":{\"size\":[480,640],\"counts\":\"" + esc + "\"}}";
    }
  }
  gt += "]}";
  dt += "]";
}

}  // namespace

int main(int argc, char** argv) {
  int num_images = 5000, threads = 0;
  bool train_scale = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--images" && i + 1 < argc) num_images = std::atoi(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--train-scale") train_scale = true;
    else {
      std::fprintf(stderr, "usage: %s [--images N] [--threads T] [--train-scale]\n", argv[0]);
      return 2;
    }
  }
  std::string gt_json, dt_json;
  auto t0 = Clock::now();
  make_dataset(num_images, 100, true, 16, gt_json, dt_json);
  std::printf("synthetic data: %d images, gt %.1f MB, results %.1f MB (built in %.2fs)\n", num_images,
              gt_json.size() / 1e6, dt_json.size() / 1e6, since(t0));

  t0 = Clock::now();
  const CocoDataset gt = parse_coco_instances(gt_json, "gt");
  const double t_gt = since(t0);
  t0 = Clock::now();
  const auto dt = parse_coco_results(dt_json, gt, "dt");
  const double t_dt = since(t0);
  std::printf("parse: gt %zu annotations %.3fs, results %zu detections %.3fs\n", gt.annotations.size(), t_gt,
              dt.size(), t_dt);
  std::vector<int> thread_counts{1};
  const int all = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (all > 1) thread_counts.push_back(all);
  for (IouType type : {IouType::Bbox, IouType::Segm}) {
    for (int th : thread_counts) {
      CocoEval ev(gt, dt, type);
      auto t1 = Clock::now();
      ev.evaluate(th);
      const double te = since(t1);
      t1 = Clock::now();
      ev.accumulate(th);
      const double ta = since(t1);
      const auto& s = ev.summarize();
      std::printf("%s threads=%d: evaluate %.3fs accumulate %.3fs total %.3fs (AP %.4f AP50 %.4f AR100 %.4f)\n",
                  iou_type_name(type), th, te, ta, te + ta, s[0], s[1], s[8]);
    }
  }
  std::printf("peak RSS %ld MB\n", peak_rss_mb());
  if (train_scale) {
    std::string big, none;
    dt_json.clear();
    dt_json.shrink_to_fit();
    t0 = Clock::now();
    make_dataset(118287, 0, false, 28, big, none);
    std::printf("train-scale instances: %.1f MB (built in %.1fs)\n", big.size() / 1e6, since(t0));
    t0 = Clock::now();
    const CocoDataset train = parse_coco_instances(big, "train");
    std::printf("parse train-scale: %zu images, %zu annotations in %.2fs; peak RSS %ld MB\n", train.images.size(),
                train.annotations.size(), since(t0), peak_rss_mb());
  }
  return 0;
}
