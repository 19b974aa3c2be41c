// Reading the vector files of ../shared/data (README there): little-endian
// int32 rows and columns, then rows x columns values; *.f16bin holds IEEE
// half floats, *.fbin float32, *.ibin int32 (neighbour ids). Header-only:
// benchmarks only. Errors throw std::runtime_error naming the file.
#pragma once

#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/common/synthetic.h"
#include "storage/half_float.h"

namespace engram::bench {

// Reads *.f16bin, *.fbin (as float) or *.ibin (as int32 cast to float is
// wrong, so ids come through ReadIds).
inline Matrix ReadVectors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  int32_t header[2];
  in.read(reinterpret_cast<char*>(header), sizeof(header));
  Matrix m;
  m.rows = header[0];
  m.cols = header[1];
  m.values.resize(m.rows * m.cols);
  if (path.ends_with(".f16bin")) {
    std::vector<uint16_t> halves(m.values.size());
    in.read(reinterpret_cast<char*>(halves.data()), halves.size() * 2);
    for (size_t i = 0; i < halves.size(); ++i) {
      m.values[i] = HalfToFloat(halves[i]);
    }
  } else {
    in.read(reinterpret_cast<char*>(m.values.data()), m.values.size() * 4);
  }
  if (!in) throw std::runtime_error("short read in " + path);
  return m;
}

inline std::vector<std::vector<int32_t>> ReadIds(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  int32_t header[2];
  in.read(reinterpret_cast<char*>(header), sizeof(header));
  std::vector<std::vector<int32_t>> ids(header[0], std::vector<int32_t>(header[1]));
  for (auto& row : ids) in.read(reinterpret_cast<char*>(row.data()), row.size() * 4);
  if (!in) throw std::runtime_error("short read in " + path);
  return ids;
}

}  // namespace engram::bench
