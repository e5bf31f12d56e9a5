// maskrcnn-cpp: torchvision's Mask R-CNN in C++ (LibTorch), no Python needed.
//
// Usage:
//
//   #include <maskrcnn/maskrcnn.h>
//
//   // torchvision checkpoints load directly (zip or legacy .pth, v1 or v2); a
//   // model `maskrcnn train` wrote brings its class names and input sizes.
//   auto model = maskrcnn::load_model(maskrcnn::default_weights_path());
//   at::Tensor rgb = maskrcnn::read_image("street.jpg");          // uint8 [3, H, W]
//   auto dets = model.predict({rgb})[0];                          // uint8, or float in [0, 1]
//   for (int64_t i = 0; i < dets.size(); ++i) {
//     const std::string& name = model.class_names()[dets.labels[i].item<int64_t>()];
//     float score = dets.scores[i].item<float>();
//     at::Tensor mask = dets.binary_mask(i, 0.5);                  // uint8 [H, W]
//   }
//   maskrcnn::DrawOptions draw;
//   draw.class_names = model.class_names();
//   maskrcnn::write_png("out.png", maskrcnn::draw_detections(rgb, dets, draw));
//
//   // Faster CPU inference (process-wide; see cpu_settings.h):
//   maskrcnn::set_inference_precision(maskrcnn::Precision::BF16);
//
//   // Training / fine-tuning on COCO-format data (what `maskrcnn train` runs):
//   maskrcnn::TrainOptions t;
//   t.train_annotations = "data/annotations.json"; t.train_images = "data/images";
//   t.weights = maskrcnn::default_weights_path();   // fine-tune COCO weights
//   t.epochs = 10; t.output_dir = "run";
//   maskrcnn::train(t);                             // run/model_final.pth (+ .json)
//   auto mine = maskrcnn::load_model("run/model_final.pth");
//
//   // Or step by step: model.train(); auto losses = model.losses(images, targets);
//
//   // Videos, with instances tracked across frames (video.h, tracker.h):
//   auto video = maskrcnn::VideoReader::open_file("street.mp4");
//   maskrcnn::Tracker tracker;
//   for (maskrcnn::VideoFrame f; video.next(f);) {
//     auto d = model.predict({f.rgb})[0];
//     std::vector<int64_t> track_ids = tracker.update(d);   // stable across frames
//   }
//
//   // What each stage computed, from the same forward pass (trace.h), and the
//   // stage-by-stage HTML report of `maskrcnn explain` (explain.h):
//   maskrcnn::ForwardTrace trace;
//   auto traced = model.predict_traced(rgb, trace);   // == model.predict({rgb})[0]
//   at::Tensor p2 = trace.fpn[0].map;                 // [256, H/4, W/4]
//   std::string html = maskrcnn::render_explain_report(trace, rgb, model.class_names());
//
// Link with CMake:  find_package(maskrcnn REQUIRED)
//                   target_link_libraries(app PRIVATE maskrcnn::maskrcnn)
#pragma once

#include "maskrcnn/checkpoint.h"
#include "maskrcnn/config.h"
#include "maskrcnn/cpu_settings.h"
#include "maskrcnn/error.h"
#include "maskrcnn/coco_eval.h"
#include "maskrcnn/evaluator.h"
#include "maskrcnn/explain.h"
#include "maskrcnn/image.h"
#include "maskrcnn/model.h"
#include "maskrcnn/model_info.h"
#include "maskrcnn/ops.h"
#include "maskrcnn/results.h"
#include "maskrcnn/rle.h"
#include "maskrcnn/trace.h"
#include "maskrcnn/tracker.h"
#include "maskrcnn/trainer.h"
#include "maskrcnn/types.h"
#include "maskrcnn/video.h"
