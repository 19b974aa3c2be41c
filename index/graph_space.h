// What the Vamana graph needs from the vectors it connects: distances from a
// point (a query, or one of its own nodes) to nodes, in whatever space the
// graph is built in (2-bit binary codes, INT8 codes). The graph never sees the
// vectors themselves, so one graph implementation serves every space.
//
// Distances are "lower is closer" and must not be negative: RobustPrune
// compares alpha * d(a, b) with d(p, b), which only means something for
// non-negative distances.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace engram::index {

class GraphSpace {
 public:
  virtual ~GraphSpace() = default;

  class Point {
   public:
    virtual ~Point() = default;
    // out[i] = distance from this point to nodes[i]. Every node must have
    // been added to the space before it is passed here.
    virtual void Distances(const uint32_t* nodes, size_t count, float* out) const = 0;
  };

  // The point of an existing node (used when building and pruning).
  virtual std::unique_ptr<Point> NodePoint(uint32_t node) const = 0;
};

}  // namespace engram::index
