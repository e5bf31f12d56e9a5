// Writing output files so that readers never see half a file: write a
// temporary next to the target, flush, fsync, then rename over it.
#pragma once
#include <cstddef>
#include <string>

namespace maskrcnn::io {

// Throws maskrcnn::Error naming `path` on any failure; leaves no temporary.
void write_file_atomic(const std::string& path, const void* data, size_t size);
inline void write_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}

// Removes `path`'s temporaries (path.tmp.PID) that a killed process left
// behind: those whose PID is no longer running. Returns how many it removed.
int remove_stale_temporaries(const std::string& path);

}  // namespace maskrcnn::io
