// maskrcnn-cpp: torchvision's Mask R-CNN in C++ (LibTorch), no Python needed.
//
// Usage:
//
//   #include <maskrcnn/maskrcnn.h>
//
//   // torchvision checkpoints load directly (zip or legacy .pth, v1 or v2).
//   auto model = maskrcnn::MaskRCNN::from_checkpoint(maskrcnn::default_weights_path());
//   at::Tensor rgb = maskrcnn::read_image("street.jpg");          // uint8 [3, H, W]
//   auto dets = model.predict({maskrcnn::to_float_image(rgb)})[0];
//   for (int64_t i = 0; i < dets.size(); ++i) {
//     int64_t label = dets.labels[i].item<int64_t>();            // COCO category id
//     float score = dets.scores[i].item<float>();
//     at::Tensor mask = dets.binary_mask(i, 0.5);                  // uint8 [H, W]
//   }
//   maskrcnn::write_png("out.png", maskrcnn::draw_detections(rgb, dets,
//                        {0.5, 0.45, maskrcnn::coco_category_names()}));
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
// Link with CMake:  find_package(maskrcnn REQUIRED)
//                   target_link_libraries(app PRIVATE maskrcnn::maskrcnn)
#pragma once

#include "maskrcnn/checkpoint.h"
#include "maskrcnn/config.h"
#include "maskrcnn/error.h"
#include "maskrcnn/coco_eval.h"
#include "maskrcnn/evaluator.h"
#include "maskrcnn/image.h"
#include "maskrcnn/model.h"
#include "maskrcnn/model_info.h"
#include "maskrcnn/ops.h"
#include "maskrcnn/results.h"
#include "maskrcnn/rle.h"
#include "maskrcnn/trainer.h"
