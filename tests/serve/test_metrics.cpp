// GET /metrics's text: Prometheus exposition format 0.0.4, cumulative
// histogram buckets, counters by route and status code.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "serve/metrics.h"

using namespace maskrcnn::serve;

namespace {

bool has_line(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

TEST(Metrics, NumbersReadBackExactly) {
  EXPECT_EQ(prometheus_number(0.005), "0.005");
  EXPECT_EQ(prometheus_number(1), "1");
  EXPECT_EQ(prometheus_number(2.5), "2.5");
  EXPECT_EQ(prometheus_number(24), "24");
  EXPECT_EQ(prometheus_number(1234567), "1234567");
  EXPECT_EQ(prometheus_number(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(prometheus_number(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(prometheus_number(std::nan("")), "NaN");
  const double odd = 0.1 + 0.2;
  EXPECT_EQ(std::stod(prometheus_number(odd)), odd);
}

TEST(Metrics, LabelValuesAreEscaped) {
  EXPECT_EQ(prometheus_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

TEST(Metrics, HistogramBucketsAreCumulativeAndInclusive) {
  Histogram h({1, 2, 4});
  for (double v : {0.5, 1.0, 3.0, 10.0}) h.observe(v);
  std::string out;
  h.write(out, "x");
  EXPECT_EQ(out,
            "x_bucket{le=\"1\"} 2\n"
            "x_bucket{le=\"2\"} 2\n"
            "x_bucket{le=\"4\"} 3\n"
            "x_bucket{le=\"+Inf\"} 4\n"
            "x_sum 14.5\n"
            "x_count 4\n");
}

TEST(Metrics, TextHasEveryFamilyWithItsValues) {
  Metrics m;
  m.count_request("/v1/predict", 200);
  m.count_request("/v1/predict", 200);
  m.count_request("/v1/predict", 503);
  m.count_request("/healthz", 200);
  m.observe_predict_seconds(0.2);
  m.observe_batch(3, 0.1, true);
  m.observe_batch(1, 0.05, false);
  Gauges g;
  g.queue_length = 5;
  g.running_images = 2;
  g.ready = true;
  const std::string text = m.prometheus_text(g);
  EXPECT_TRUE(has_line(text, "maskrcnn_http_requests_total{route=\"/v1/predict\",code=\"200\"} 2")) << text;
  EXPECT_TRUE(has_line(text, "maskrcnn_http_requests_total{route=\"/v1/predict\",code=\"503\"} 1")) << text;
  EXPECT_TRUE(has_line(text, "maskrcnn_http_requests_total{route=\"/healthz\",code=\"200\"} 1")) << text;
  EXPECT_TRUE(has_line(text, "maskrcnn_predict_request_duration_seconds_bucket{le=\"0.1\"} 0")) << text;
  EXPECT_TRUE(has_line(text, "maskrcnn_predict_request_duration_seconds_bucket{le=\"0.25\"} 1")) << text;
  EXPECT_TRUE(has_line(text, "maskrcnn_predict_request_duration_seconds_count 1")) << text;
  EXPECT_TRUE(has_line(text, "maskrcnn_queue_length 5")) << text;
  EXPECT_TRUE(has_line(text, "maskrcnn_running_images 2")) << text;
  EXPECT_TRUE(has_line(text, "maskrcnn_ready 1")) << text;
  EXPECT_TRUE(has_line(text, "maskrcnn_batch_size_bucket{le=\"1\"} 1")) << text;
  EXPECT_TRUE(has_line(text, "maskrcnn_batch_size_bucket{le=\"2\"} 1")) << text;
  EXPECT_TRUE(has_line(text, "maskrcnn_batch_size_bucket{le=\"4\"} 2")) << text;
  EXPECT_TRUE(has_line(text, "maskrcnn_batch_size_count 2")) << text;
  EXPECT_TRUE(has_line(text, "maskrcnn_images_processed_total 3")) << text;
  EXPECT_TRUE(has_line(text, "maskrcnn_images_failed_total 1")) << text;
}

// Every line is a HELP, a TYPE, or a sample of the family its TYPE announced,
// as Prometheus's text parser requires.
TEST(Metrics, TextFollowsTheExpositionFormat) {
  Metrics m;
  m.count_request("other", 404);
  m.observe_predict_seconds(1.5);
  m.observe_batch(2, 0.3, true);
  const std::string text = m.prometheus_text(Gauges{});
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  const std::regex help(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S.*)");
  const std::regex type(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram))");
  const std::regex sample(R"(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*\})? (\S+))");
  std::istringstream lines(text);
  std::string line, family, kind;
  std::set<std::string> families;
  std::smatch m2;
  while (std::getline(lines, line)) {
    if (std::regex_match(line, m2, help)) continue;
    if (std::regex_match(line, m2, type)) {
      family = m2[1];
      kind = m2[2];
      EXPECT_TRUE(families.insert(family).second) << "family declared twice: " << family;
      continue;
    }
    ASSERT_TRUE(std::regex_match(line, m2, sample)) << "not a sample: " << line;
    const std::string name = m2[1];
    if (kind == "histogram") {
      EXPECT_TRUE(name == family + "_bucket" || name == family + "_sum" || name == family + "_count") << line;
    } else {
      EXPECT_EQ(name, family) << line;
    }
    const std::string value = m2[4];
    EXPECT_NO_THROW((void)std::stod(value)) << line;
  }
  for (const char* f : {"maskrcnn_http_requests_total", "maskrcnn_predict_request_duration_seconds",
                        "maskrcnn_queue_length", "maskrcnn_batch_size", "maskrcnn_images_processed_total"})
    EXPECT_TRUE(families.count(f)) << f;
}

}  // namespace
