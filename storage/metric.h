// The similarity metric of a space. Kept in its own C++17 header because the
// index (and its CUDA code) uses it without the rest of the domain types.
#pragma once

namespace engram {

enum class Metric { kCosine, kInnerProduct, kL2 };

}  // namespace engram
