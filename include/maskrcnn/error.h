// maskrcnn::Error: the one exception type the library throws for bad input
// (unreadable files, malformed checkpoints or JSON, wrong shapes). Its what()
// is a single line that names the file and what is wrong, fit for users.
#pragma once
#include <stdexcept>
#include <string>

namespace maskrcnn {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace maskrcnn
