// GET /: the web page of `maskrcnn serve` (src/serve/page/index.html), built
// into the binary by src/serve/CMakeLists.txt so that the server needs no
// files beside it and the page loads nothing from the network.
#pragma once
#include <string_view>

namespace maskrcnn::serve {

// The whole page: HTML with its CSS and JavaScript inline.
std::string_view index_html();

}  // namespace maskrcnn::serve
