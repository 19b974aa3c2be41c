// VectorPartition's snapshots (Save, Load) and whole-partition iteration
// (ForEachLive, the row accessors). Kept apart from the search code; the format is the order of the
// Put calls in Save.
//
// Layout (little-endian): magic, format version; the options that must match
// (metric, dimension, attribute bytes, R, build L, alpha); node count; per
// node, in chunk-sized runs: ids, deleted flags, vectors, binary codes,
// attributes; INT8 ranges and codes when fitted; the structure (first stage,
// calibration); the graph (entry point, then per node flags, degree and
// edges). snapshot_file.h adds the length and CRC trailer.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "index/snapshot_file.h"
#include "index/vector_partition.h"

namespace engram::index {
namespace {

constexpr uint64_t kMagic = 0x50564d4152474e45ull;  // "ENGRAMVP"
// 2: node data in runs of the geometric chunks (16, 32, 64, ... nodes).
// 3: inner-product graphs are built in the MIPS-to-L2 reduced space; the
//    graphs of version 2 were built over clamped distances and are rebuilt.
constexpr uint32_t kFormatVersion = 3;

// Calls `run(first_node, count)` for consecutive nodes below `node_count`
// that share a chunk (so their data is contiguous).
template <typename Fn>
void ForEachRun(uint32_t node_count, Fn&& run) {
  for (uint32_t first = 0; first < node_count;) {
    const uint32_t count = std::min(ChunkedArray<uint8_t>::RunLength(first), node_count - first);
    run(first, count);
    first += count;
  }
}

struct Header {
  uint32_t metric, dimension, attribute_bytes, max_degree, build_beam_width;
  float alpha;
  bool operator==(const Header&) const = default;
};

Header HeaderOf(const PartitionOptions& options) {
  return {static_cast<uint32_t>(options.metric),
          options.dimension,
          options.attribute_bytes,
          options.graph.max_degree,
          options.graph.build_beam_width,
          options.graph.alpha};
}

}  // namespace

absl::Status VectorPartition::Save(const std::string& path, fileio::FileSystem* fs) const {
  absl::MutexLock lock(&write_mutex_);
  absl::StatusOr<std::unique_ptr<SnapshotWriter>> created = SnapshotWriter::Create(path, fs);
  if (!created.ok()) return created.status();
  SnapshotWriter& out = **created;
  const uint32_t count = node_count_.load(std::memory_order_acquire);
  const size_t dim = options_.dimension;
  out.Put(kMagic);
  out.Put(kFormatVersion);
  out.Put(HeaderOf(options_));
  out.Put(count);
  ForEachRun(count, [&](uint32_t first, uint32_t n) {
    out.Write(ids_.At(first), n * sizeof(uint64_t));
    for (uint32_t node = first; node < first + n; ++node) {
      out.Put<uint8_t>(deleted_.At(node)->load(std::memory_order_acquire));
    }
    out.Write(vectors_.At(first), size_t{n} * dim * sizeof(float));
    out.Write(binary_.At(first), size_t{n} * binary_codes_.code_words() * sizeof(uint64_t));
    if (options_.attribute_bytes > 0) {
      out.Write(attributes_.At(first), size_t{n} * options_.attribute_bytes);
    }
  });
  out.Put<uint8_t>(quantizer_ != nullptr);
  if (quantizer_ != nullptr) {
    out.Write(quantizer_->low().data(), dim * sizeof(float));
    out.Write(quantizer_->step().data(), dim * sizeof(float));
    ForEachRun(count, [&](uint32_t first, uint32_t n) { out.Write(int8_.At(first), n * dim); });
  }
  std::shared_ptr<const Structure> current = structure();
  out.Put(static_cast<uint32_t>(current->first_stage));
  out.Put(current->default_beam_width);
  out.Put(current->sample_recall);
  out.Put(current->binary_sample_recall);
  out.Put(current->build_seconds);
  out.Put(current->calibrated_nodes);
  const VamanaGraph* graph = current->graph.get();
  out.Put<uint8_t>(graph != nullptr);
  if (graph != nullptr) graph->Save(out, count);
  return out.Commit();
}

absl::StatusOr<std::unique_ptr<VectorPartition>> VectorPartition::Load(
    const std::string& path, const PartitionOptions& options) {
  absl::StatusOr<std::unique_ptr<SnapshotReader>> opened = SnapshotReader::Open(path);
  if (!opened.ok()) return opened.status();
  SnapshotReader& in = **opened;
  auto corrupt = [&](absl::string_view what) {
    absl::Status finished = in.Finish();
    return absl::DataLossError(absl::StrCat("snapshot '", path, "': ", what,
                                            finished.ok() ? "" : " (", finished.message(),
                                            finished.ok() ? "" : ")"));
  };
  uint64_t magic = 0;
  uint32_t version = 0;
  Header header{};
  if (!in.Get(&magic) || magic != kMagic) return corrupt("not an Engram partition snapshot");
  if (!in.Get(&version) || version != kFormatVersion) {
    return corrupt(absl::StrCat("unknown format version ", version));
  }
  if (!in.Get(&header)) return corrupt("truncated header");
  if (!(header == HeaderOf(options))) {
    return absl::FailedPreconditionError(
        absl::StrCat("snapshot '", path,
                     "' was written with other index options (metric, dimension, "
                     "attributes or graph parameters)"));
  }
  absl::StatusOr<std::unique_ptr<VectorPartition>> created = Create(options);
  if (!created.ok()) return created.status();
  VectorPartition& p = **created;
  absl::MutexLock lock(&p.write_mutex_);
  const size_t dim = options.dimension;
  uint32_t count = 0;
  if (!in.Get(&count)) return corrupt("truncated node count");
  const size_t bytes_per_node = sizeof(uint64_t) + 1 + dim * sizeof(float) +
                                p.binary_codes_.code_words() * sizeof(uint64_t) +
                                options.attribute_bytes;
  if (size_t{count} * bytes_per_node > in.remaining()) return corrupt("node count too large");
  p.ids_.Reserve(count);
  p.vectors_.Reserve(count);
  p.binary_.Reserve(count);
  p.int8_.Reserve(count);
  p.attributes_.Reserve(count);
  p.deleted_.Reserve(count);
  p.squared_norms_.Reserve(count);
  bool ok = true;
  uint64_t deleted = 0;
  ForEachRun(count, [&](uint32_t first, uint32_t n) {
    ok = ok && in.Read(p.ids_.At(first), n * sizeof(uint64_t));
    for (uint32_t node = first; ok && node < first + n; ++node) {
      uint8_t flag = 0;
      ok = in.Get(&flag);
      p.deleted_.At(node)->store(flag != 0, std::memory_order_relaxed);
      deleted += flag != 0;
    }
    ok = ok && in.Read(p.vectors_.At(first), size_t{n} * dim * sizeof(float));
    ok = ok &&
         in.Read(p.binary_.At(first), size_t{n} * p.binary_codes_.code_words() * sizeof(uint64_t));
    if (options.attribute_bytes > 0) {
      ok = ok && in.Read(p.attributes_.At(first), size_t{n} * options.attribute_bytes);
    }
  });
  if (!ok) return corrupt("truncated vectors");
  for (uint32_t node = 0; node < count; ++node) p.RecordSquaredNorm(node);
  uint8_t has_quantizer = 0;
  if (!in.Get(&has_quantizer)) return corrupt("truncated quantizer");
  if (has_quantizer) {
    std::vector<float> low(dim), step(dim);
    if (!in.Read(low.data(), dim * sizeof(float)) || !in.Read(step.data(), dim * sizeof(float))) {
      return corrupt("truncated quantizer ranges");
    }
    absl::StatusOr<ScalarQuantizer> quantizer =
        ScalarQuantizer::FromRanges(std::move(low), std::move(step));
    if (!quantizer.ok()) return corrupt(quantizer.status().message());
    p.quantizer_ = std::make_unique<ScalarQuantizer>(*std::move(quantizer));
    ForEachRun(count, [&](uint32_t first, uint32_t n) {
      ok = ok && in.Read(p.int8_.At(first), size_t{n} * dim);
    });
    if (!ok) return corrupt("truncated INT8 codes");
  }
  auto structure = std::make_shared<Structure>();
  uint32_t stage = 0;
  uint8_t has_graph = 0;
  if (!in.Get(&stage) || !in.Get(&structure->default_beam_width) ||
      !in.Get(&structure->sample_recall) || !in.Get(&structure->binary_sample_recall) ||
      !in.Get(&structure->build_seconds) || !in.Get(&structure->calibrated_nodes) ||
      !in.Get(&has_graph)) {
    return corrupt("truncated structure");
  }
  if (stage > static_cast<uint32_t>(FirstStage::kInt8) ||
      (stage != static_cast<uint32_t>(FirstStage::kExact) && p.quantizer_ == nullptr) ||
      structure->default_beam_width > kMaxBeamWidth) {
    return corrupt("inconsistent structure");
  }
  structure->first_stage = static_cast<FirstStage>(stage);
  structure->reached_target = structure->sample_recall >= options.target_recall;
  if (has_graph) {
    if (structure->first_stage == FirstStage::kExact) return corrupt("graph without codes");
    structure->graph = VamanaGraph::Load(in, options.graph, count);
    if (structure->graph == nullptr) return corrupt("inconsistent graph");
  }
  if (absl::Status finished = in.Finish(); !finished.ok()) return finished;

  // Trusted from here on: publish.
  for (uint32_t node = 0; node < count; ++node) {
    if (!p.deleted_.At(node)->load(std::memory_order_relaxed)) {
      p.node_of_id_[*p.ids_.At(node)] = node;
    }
  }
  p.deleted_count_.store(deleted, std::memory_order_relaxed);
  p.published_quantizer_.store(p.quantizer_.get(), std::memory_order_release);
  p.structure_ = std::move(structure);
  p.node_count_.store(count, std::memory_order_release);
  return created;
}

void VectorPartition::ForEachLive(
    const std::function<void(uint64_t id, const uint8_t* attributes)>& visit) const {
  const uint32_t count = node_count_.load(std::memory_order_acquire);
  for (uint32_t node = 0; node < count; ++node) {
    if (deleted_.At(node)->load(std::memory_order_acquire)) continue;
    visit(*ids_.At(node), attributes_.At(node));
  }
}

void VectorPartition::CopyRows(uint32_t first, uint32_t count, float* out) const {
  const size_t dim = options_.dimension;
  for (uint32_t row = first; row < first + count; ++row) {
    std::copy_n(vectors_.At(row), dim, out + size_t{row - first} * dim);
  }
}

uint64_t VectorPartition::RowId(uint32_t row) const { return *ids_.At(row); }

std::vector<uint64_t> VectorPartition::LiveRowBitmap(uint32_t rows,
                                                     const AcceptFunction* accept) const {
  std::vector<uint64_t> bits((size_t{rows} + 63) / 64, 0);
  for (uint32_t row = 0; row < rows; ++row) {
    if (deleted_.At(row)->load(std::memory_order_acquire)) continue;
    if (accept != nullptr && !(*accept)(*ids_.At(row), attributes_.At(row))) continue;
    bits[row / 64] |= uint64_t{1} << (row % 64);
  }
  return bits;
}

}  // namespace engram::index
