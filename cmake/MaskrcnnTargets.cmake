# The project's libraries. Sources are globbed per folder so that adding a file
# needs no edit here (CONFIGURE_DEPENDS re-globs on every build).
#
# Bottom up (a library uses only those above it in this list):
#   maskrcnn_checkpoint  src/io/checkpoint: .pth reading/writing           (LibTorch only)
#   maskrcnn_core        src/common, src/ops, src/backend/cpu, src/modeling:
#                        ground types, kernels, the CPU fast path, the model (LibTorch only)
#   maskrcnn_coco        src/io/coco, src/evaluation: RLE, COCO JSON, COCOeval (no LibTorch)
#   maskrcnn             src/image, src/api, src/data, src/engine, src/video: images and
#                        drawing, model loading with its sidecar, results, data, training,
#                        video I/O and tracking, the explain report (+ OpenCV)

set(MASKRCNN_INCLUDE ${PROJECT_SOURCE_DIR}/include)

# A folder still without sources (work in progress) yields an empty archive
# rather than a configure error, so the rest of the tree keeps building.
function(maskrcnn_static_library name)
  if(NOT ARGN)
    set(ARGN ${PROJECT_SOURCE_DIR}/cmake/empty.cpp)
  endif()
  add_library(${name} STATIC ${ARGN})
endfunction()

function(maskrcnn_pch target)
  if(MASKRCNN_USE_PCH)
    # C++ only: nvcc does not take GCC's precompiled headers.
    target_precompile_headers(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:<torch/torch.h$<ANGLE-R>>")
  endif()
endfunction()

file(GLOB_RECURSE CHECKPOINT_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/io/checkpoint/*.cpp)
maskrcnn_static_library(maskrcnn_checkpoint ${CHECKPOINT_SOURCES})
target_include_directories(maskrcnn_checkpoint PUBLIC
  $<BUILD_INTERFACE:${MASKRCNN_INCLUDE}> $<INSTALL_INTERFACE:include>
  PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(maskrcnn_checkpoint PUBLIC ${TORCH_LIBRARIES})

file(GLOB_RECURSE CORE_SOURCES CONFIGURE_DEPENDS
  ${PROJECT_SOURCE_DIR}/src/common/*.cpp
  ${PROJECT_SOURCE_DIR}/src/ops/*.cpp
  ${PROJECT_SOURCE_DIR}/src/backend/cpu/*.cpp
  ${PROJECT_SOURCE_DIR}/src/modeling/*.cpp)
# oneDNN, called directly for Winograd convolutions and matmuls at inference (the library
# Debian's LibTorch links; a pip LibTorch hides its copy, so it is optional).
set(MASKRCNN_HAVE_DNNL OFF)
string(TOUPPER "${MASKRCNN_WITH_DNNL}" _dnnl_mode)
if(_dnnl_mode STREQUAL "AUTO" OR MASKRCNN_WITH_DNNL)  # AUTO, or ON/YES/TRUE/1
  find_path(DNNL_INCLUDE_DIR oneapi/dnnl/dnnl.hpp)
  find_library(DNNL_LIBRARY NAMES dnnl)
  if(DNNL_INCLUDE_DIR AND DNNL_LIBRARY)
    set(MASKRCNN_HAVE_DNNL ON)
  elseif(NOT _dnnl_mode STREQUAL "AUTO")
    message(FATAL_ERROR "MASKRCNN_WITH_DNNL=ON but oneDNN was not found (apt-get install libdnnl-dev)")
  endif()
endif()
message(STATUS "maskrcnn: oneDNN Winograd convolutions: ${MASKRCNN_HAVE_DNNL}")
if(NOT MASKRCNN_HAVE_DNNL)
  list(FILTER CORE_SOURCES EXCLUDE REGEX "/src/ops/[^/]+/dnnl_[^/]*\\.cpp$")
endif()
# CUDA kernels (one .cu per op, beside its CPU kernel) behind MASKRCNN_WITH_CUDA.
if(MASKRCNN_WITH_CUDA)
  file(GLOB_RECURSE CORE_CUDA_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/ops/*.cu)
  list(APPEND CORE_SOURCES ${CORE_CUDA_SOURCES})
endif()
maskrcnn_static_library(maskrcnn_core ${CORE_SOURCES})
if(MASKRCNN_WITH_CUDA)
  target_compile_definitions(maskrcnn_core PRIVATE MASKRCNN_WITH_CUDA)
endif()
if(MASKRCNN_HAVE_DNNL)
  target_compile_definitions(maskrcnn_core PRIVATE MASKRCNN_HAVE_DNNL)
  target_include_directories(maskrcnn_core PRIVATE ${DNNL_INCLUDE_DIR})
  target_link_libraries(maskrcnn_core PRIVATE ${DNNL_LIBRARY})
endif()
target_include_directories(maskrcnn_core PUBLIC
  $<BUILD_INTERFACE:${MASKRCNN_INCLUDE}> $<INSTALL_INTERFACE:include>
  PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(maskrcnn_core PUBLIC maskrcnn_checkpoint ${TORCH_LIBRARIES} Threads::Threads)
maskrcnn_pch(maskrcnn_core)

# Everything below needs OpenCV, simdjson and nlohmann-json.
if(MASKRCNN_CORE_ONLY)
  return()
endif()

find_package(simdjson REQUIRED)
find_package(nlohmann_json REQUIRED)
file(GLOB_RECURSE COCO_SOURCES CONFIGURE_DEPENDS
  ${PROJECT_SOURCE_DIR}/src/io/coco/*.cpp
  ${PROJECT_SOURCE_DIR}/src/evaluation/*.cpp)
# The atomic file writer lives in the lowest library that writes files.
list(APPEND COCO_SOURCES ${PROJECT_SOURCE_DIR}/src/io/atomic_file.cpp)
maskrcnn_static_library(maskrcnn_coco ${COCO_SOURCES})
target_include_directories(maskrcnn_coco PUBLIC
  $<BUILD_INTERFACE:${MASKRCNN_INCLUDE}> $<INSTALL_INTERFACE:include>
  PRIVATE ${PROJECT_SOURCE_DIR}/src)
target_link_libraries(maskrcnn_coco PUBLIC Threads::Threads PRIVATE simdjson::simdjson nlohmann_json::nlohmann_json)

find_package(OpenCV REQUIRED COMPONENTS core imgproc imgcodecs videoio)
file(GLOB MASKRCNN_SOURCES CONFIGURE_DEPENDS
  ${PROJECT_SOURCE_DIR}/src/image/*.cpp
  ${PROJECT_SOURCE_DIR}/src/api/*.cpp
  ${PROJECT_SOURCE_DIR}/src/data/*.cpp
  ${PROJECT_SOURCE_DIR}/src/engine/*.cpp
  ${PROJECT_SOURCE_DIR}/src/video/*.cpp
  ${PROJECT_SOURCE_DIR}/src/explain/*.cpp)
maskrcnn_static_library(maskrcnn ${MASKRCNN_SOURCES})
# The fused AdamW loop's square root vectorises only without errno.
set_source_files_properties(${PROJECT_SOURCE_DIR}/src/engine/adamw_update_cpu.cpp PROPERTIES
  COMPILE_OPTIONS -fno-math-errno SKIP_PRECOMPILE_HEADERS ON)
target_include_directories(maskrcnn PUBLIC
  $<BUILD_INTERFACE:${MASKRCNN_INCLUDE}> $<INSTALL_INTERFACE:include>
  PRIVATE ${PROJECT_SOURCE_DIR}/src ${OpenCV_INCLUDE_DIRS})
target_link_libraries(maskrcnn PUBLIC maskrcnn_core maskrcnn_coco
  PRIVATE ${OpenCV_LIBS} nlohmann_json::nlohmann_json)
maskrcnn_pch(maskrcnn)
