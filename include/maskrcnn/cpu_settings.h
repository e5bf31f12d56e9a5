// Process-wide settings of the CPU inference path (src/backend/cpu): the
// convolution algorithm, the arithmetic precision, the Winograd scratchpad
// budget and the allocator. Each applies to every model in the process; a
// GPU model ignores them.
//
//   maskrcnn::set_inference_precision(maskrcnn::Precision::BF16);  // ~1.3x faster, AVX-512 CPUs
//   maskrcnn::set_conv_algorithm(maskrcnn::ConvAlgorithm::Direct);  // torchvision's arithmetic
#pragma once
#include <cstddef>

namespace maskrcnn {

// Makes glibc keep freed large blocks in the heap instead of unmapping them
// (feature maps are 50-200 MB; re-faulting them after every layer tripled
// inference time), and gives LibTorch a CPU allocator on plain malloc so
// that they are reused (glibc does not reuse freed blocks of LibTorch's
// posix_memalign), and makes every thread share malloc's main arena (a
// thread's own arena mmaps each block over 64 MB afresh): call it before
// starting the threads that run a model. MaskRCNN's constructors call it once; set
// MASKRCNN_KEEP_MALLOC=1 to leave malloc's settings alone. No-op off glibc.
// Also caps oneDNN's process-wide primitive cache at 16 primitives (~500 MB
// less peak RSS over many image sizes); ONEDNN_PRIMITIVE_CACHE_CAPACITY overrides.
void tune_allocator_for_inference();
// Training runs LibTorch's convolutions (Debian's LibTorch on the same oneDNN)
// forward and backward at many shapes (each step's RoI counts differ): it
// needs oneDNN's default cache of 1024 primitives, or they are JIT-compiled
// again on every call. `maskrcnn train` calls it (not when
// ONEDNN_PRIMITIVE_CACHE_CAPACITY is set).
void tune_primitive_cache_for_training();

// How inference computes 3x3 stride-1 convolutions on the CPU (most of the
// model's work). Winograd (the default where available): oneDNN's Winograd
// F(4x4, 3x3), about 2.5x fewer multiplies, outputs within ~1e-5 relative of
// direct. Direct: LibTorch's convolutions, as torchvision computes them.
// Process-wide; frozen batch norm is folded into the weights either way.
// Training uses it too (forward and both backward passes), except in models
// with BatchNorm2d in train mode, whose batch statistics amplify Winograd's
// rounding in the gradients: those train on direct convolutions.
enum class ConvAlgorithm { Direct, Winograd };
void set_conv_algorithm(ConvAlgorithm algorithm);  // Winograd where unavailable: Direct
ConvAlgorithm conv_algorithm();
// Built with oneDNN (MASKRCNN_WITH_DNNL): its direct kernels (AVX2 and up)
// serve the square inference convolutions, fused with norm, add and ReLU.
bool onednn_available();
// Built with oneDNN (MASKRCNN_WITH_DNNL) and a CPU it has Winograd for (AVX-512).
bool winograd_available();
// Winograd keeps every transformed tile in a scratchpad: ~280 MB for a
// 256-channel convolution on the largest FPN level of an 800x1216 image. A
// convolution whose scratchpad would pass this many bytes runs in parts
// (groups of images, then bands of rows) that fit: default 320 MB, which
// runs every level of a default-size (800-1333 pixel) image whole; 192 MB
// (two bands there) keeps a photo's peak RSS ~130 MB lower for ~20 ms; 0
// never splits. Process-wide.
void set_winograd_scratchpad_budget(std::size_t bytes);
std::size_t winograd_scratchpad_budget();

// The arithmetic of inference convolutions on the CPU. F32 (default): as
// torchvision. BF16: every convolution takes bf16 inputs and weights with f32
// accumulation and outputs (~2x faster where the CPU has bf16 instructions);
// boxes and scores move by ~1e-2 relative. Process-wide.
enum class Precision { F32, BF16 };
void set_inference_precision(Precision precision);  // BF16 where unavailable: F32
Precision inference_precision();
// Built with oneDNN and a CPU with fast bf16 convolutions (AVX-512).
bool bf16_available();

}  // namespace maskrcnn
