#include "index/vector_partition.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <thread>

#include "absl/strings/str_cat.h"
#include "index/exact_scorer.h"

namespace engram::index {

const char* FirstStageName(FirstStage stage) {
  switch (stage) {
    case FirstStage::kExact:
      return "exact";
    case FirstStage::kBinary:
      return "binary";
    case FirstStage::kInt8:
      return "int8";
  }
  return "unknown";
}

namespace {

constexpr uint32_t kRecallAt = 10;

void Prefetch(const void* address) { __builtin_prefetch(address, 0, 3); }

}  // namespace

// Squared Euclidean distances between 2-bit codes (BinaryCodes::Distance).
class VectorPartition::BinarySpace final : public GraphSpace {
 public:
  explicit BinarySpace(const VectorPartition& partition) : partition_(partition) {}

  class CodePoint final : public Point {
   public:
    CodePoint(const VectorPartition& partition, std::vector<uint64_t> code)
        : partition_(partition), code_(std::move(code)) {}
    void Distances(const uint32_t* nodes, size_t count, float* out) const override {
      const BinaryCodes& codes = partition_.binary_codes_;
      const size_t code_bytes = codes.code_words() * sizeof(uint64_t);
      // Start every load first: the walk is bound by memory latency.
      for (size_t i = 0; i < count; ++i) {
        const char* code = reinterpret_cast<const char*>(partition_.binary_.At(nodes[i]));
        for (size_t line = 0; line < code_bytes; line += 64) Prefetch(code + line);
      }
      for (size_t i = 0; i < count; ++i) {
        out[i] = static_cast<float>(codes.Distance(code_.data(), partition_.binary_.At(nodes[i])));
      }
    }

   private:
    const VectorPartition& partition_;
    std::vector<uint64_t> code_;
  };

  std::unique_ptr<Point> NodePoint(uint32_t node) const override {
    const uint64_t* code = partition_.binary_.At(node);
    return std::make_unique<CodePoint>(
        partition_, std::vector<uint64_t>(code, code + partition_.binary_codes_.code_words()));
  }
  std::unique_ptr<Point> QueryPoint(const float* query) const {
    std::vector<uint64_t> code(partition_.binary_codes_.code_words());
    partition_.binary_codes_.Encode(query, code.data());
    return std::make_unique<CodePoint>(partition_, std::move(code));
  }

 private:
  const VectorPartition& partition_;
};

// Asymmetric distances from a float point to INT8 codes: squared L2 for L2,
// 1 - inner product (clamped at 0) for cosine (unit vectors), and for inner
// product the squared L2 distance after the MIPS-to-L2 reduction
// (Bachrach et al., "Speeding up the Xbox recommender system using a
// Euclidean transformation for inner-product spaces", RecSys 2014): every
// stored vector x is seen as x' = [x, sqrt(M^2 - |x|^2)] with M the largest
// norm in the partition, a query q as q' = [q, 0]. Then
//   |q' - x'|^2 = |q|^2 + M^2 - 2 q.x,
// so L2 order in the reduced space is inner-product order, and the graph
// gets a true metric to prune with. Only the extra coordinate's term needs
// the node's norm; the inner product comes from the INT8 kernel.
class VectorPartition::Int8Space final : public GraphSpace {
 public:
  Int8Space(const VectorPartition& partition, const ScalarQuantizer& quantizer)
      : partition_(partition), quantizer_(quantizer) {}

  class FloatPoint final : public Point {
   public:
    // `squared_norm`, `extra`: |point|^2 and its extra coordinate (0 for a
    // query); `max_squared_norm`: M^2 as the point was made.
    FloatPoint(const VectorPartition& partition, ScalarQuantizer::Query query, Metric metric,
               float squared_norm, float extra, float max_squared_norm)
        : partition_(partition),
          query_(std::move(query)),
          metric_(metric),
          constant_(squared_norm + extra * extra + max_squared_norm),
          extra_(extra),
          max_squared_norm_(max_squared_norm) {}
    void Distances(const uint32_t* nodes, size_t count, float* out) const override {
      const size_t code_bytes = partition_.options_.dimension;
      for (size_t i = 0; i < count; ++i) {
        const char* code = reinterpret_cast<const char*>(partition_.int8_.At(nodes[i]));
        for (size_t line = 0; line < code_bytes; line += 64) Prefetch(code + line);
      }
      for (size_t i = 0; i < count; ++i) {
        const float distance = query_.Distance(partition_.int8_.At(nodes[i]));
        switch (metric_) {
          case Metric::kL2:
            out[i] = distance;
            break;
          case Metric::kCosine:
            out[i] = std::max(0.0f, 1.0f + distance);
            break;
          case Metric::kInnerProduct: {
            // distance is -q.x; the extra coordinates add -2 e_q e_x.
            float cross = 0;
            if (extra_ != 0) {
              cross = extra_ *
                      ExtraCoordinate(*partition_.squared_norms_.At(nodes[i]), max_squared_norm_);
            }
            out[i] = std::max(0.0f, constant_ + 2.0f * distance - 2.0f * cross);
            break;
          }
        }
      }
    }

   private:
    const VectorPartition& partition_;
    ScalarQuantizer::Query query_;
    Metric metric_;
    float constant_;  // |p'|^2 + M^2
    float extra_;
    float max_squared_norm_;
  };

  std::unique_ptr<Point> NodePoint(uint32_t node) const override {
    const float max_squared_norm = partition_.max_squared_norm();
    const float squared_norm = *partition_.squared_norms_.At(node);
    return MakePoint(partition_.vectors_.At(node), squared_norm,
                     ExtraCoordinate(squared_norm, max_squared_norm), max_squared_norm);
  }
  std::unique_ptr<Point> QueryPoint(const float* query) const {
    // Only the inner-product reduction uses the norms (see FloatPoint).
    float squared_norm = 0;
    if (partition_.options_.metric == Metric::kInnerProduct) {
      squared_norm = partition_.kernels_.inner_product(query, query, partition_.options_.dimension);
    }
    return MakePoint(query, squared_norm, 0.0f, partition_.max_squared_norm());
  }

 private:
  // sqrt(M^2 - |x|^2), 0 for a vector beyond M (added after M was read).
  static float ExtraCoordinate(float squared_norm, float max_squared_norm) {
    return std::sqrt(std::max(0.0f, max_squared_norm - squared_norm));
  }
  std::unique_ptr<Point> MakePoint(const float* vector, float squared_norm, float extra,
                                   float max_squared_norm) const {
    const Metric metric = partition_.options_.metric;
    return std::make_unique<FloatPoint>(
        partition_, quantizer_.Prepare({vector, partition_.options_.dimension}, metric), metric,
        squared_norm, extra, max_squared_norm);
  }

  const VectorPartition& partition_;
  const ScalarQuantizer& quantizer_;
};

absl::StatusOr<std::unique_ptr<VectorPartition>> VectorPartition::Create(
    const PartitionOptions& options) {
  if (options.dimension == 0) return absl::InvalidArgumentError("dimension must be positive");
  if (options.graph.max_degree < 2 || options.graph.max_degree > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("max degree R is ", options.graph.max_degree, "; must be in 2..1024"));
  }
  if (options.graph.build_beam_width < 1 || options.graph.build_beam_width > kMaxBeamWidth) {
    return absl::InvalidArgumentError(absl::StrCat("build beam width L is ",
                                                   options.graph.build_beam_width,
                                                   "; must be in 1..", kMaxBeamWidth));
  }
  if (!(options.graph.alpha >= 1.0f && options.graph.alpha <= 4.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("alpha is ", options.graph.alpha, "; must be in 1..4"));
  }
  if (options.default_beam_width < 1 || options.default_beam_width > kMaxBeamWidth) {
    return absl::InvalidArgumentError(absl::StrCat(
        "default beam width is ", options.default_beam_width, "; must be in 1..", kMaxBeamWidth));
  }
  return std::unique_ptr<VectorPartition>(new VectorPartition(options));
}

VectorPartition::VectorPartition(const PartitionOptions& options)
    : options_(options),
      kernels_(SelectFloatKernels()),
      binary_codes_(options.dimension),
      ids_(1),
      vectors_(options.dimension),
      binary_(binary_codes_.code_words()),
      int8_(options.dimension),
      attributes_(std::max<uint32_t>(options.attribute_bytes, 1)),
      deleted_(1),
      squared_norms_(1),
      structure_(std::make_shared<Structure>()) {}

VectorPartition::~VectorPartition() = default;

std::shared_ptr<const VectorPartition::Structure> VectorPartition::structure() const {
  return std::atomic_load_explicit(&structure_, std::memory_order_acquire);
}

int VectorPartition::build_threads() const {
  if (options_.build_threads > 0) return options_.build_threads;
  return std::max(1u, std::thread::hardware_concurrency());
}

uint64_t VectorPartition::size() const {
  return node_count_.load(std::memory_order_acquire) -
         deleted_count_.load(std::memory_order_acquire);
}

absl::Status VectorPartition::Validate(std::span<const float> vector) const {
  if (vector.size() != options_.dimension) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vector has ", vector.size(), " dimensions; the partition expects ", options_.dimension));
  }
  for (size_t i = 0; i < vector.size(); ++i) {
    if (!std::isfinite(vector[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("vector[", i, "] is ", vector[i], "; values must be finite"));
    }
  }
  return absl::OkStatus();
}

std::vector<float> VectorPartition::PrepareQuery(std::span<const float> query) const {
  std::vector<float> prepared(query.begin(), query.end());
  if (options_.metric == Metric::kCosine) {
    double norm = 0;
    for (float v : prepared) norm += double{v} * v;
    norm = std::sqrt(norm);
    if (norm > 0) {
      for (float& v : prepared) v = static_cast<float>(v / norm);
    }
  }
  return prepared;
}

float VectorPartition::ExactScore(const float* query, uint32_t node) const {
  const float* vector = vectors_.At(node);
  if (options_.metric == Metric::kL2) {
    return -kernels_.l2_squared(query, vector, options_.dimension);
  }
  return kernels_.inner_product(query, vector, options_.dimension);
}

void VectorPartition::AppendNode(uint64_t id, const float* vector, const uint8_t* attributes,
                                 bool prepared) {
  const uint32_t node = node_count_.load(std::memory_order_relaxed);
  ids_.Reserve(node + 1);
  vectors_.Reserve(node + 1);
  binary_.Reserve(node + 1);
  int8_.Reserve(node + 1);
  attributes_.Reserve(node + 1);
  deleted_.Reserve(node + 1);
  squared_norms_.Reserve(node + 1);
  *ids_.At(node) = id;
  if (options_.attribute_bytes > 0) {
    std::copy_n(attributes, options_.attribute_bytes, attributes_.At(node));
  }
  if (prepared) {
    std::copy_n(vector, options_.dimension, vectors_.At(node));
  } else {
    std::vector<float> normalised = PrepareQuery({vector, options_.dimension});
    std::copy(normalised.begin(), normalised.end(), vectors_.At(node));
  }
  RecordSquaredNorm(node);
  binary_codes_.Encode(vectors_.At(node), binary_.At(node));
  if (quantizer_ != nullptr) quantizer_->Encode(vectors_.At(node), int8_.At(node));
  node_of_id_[id] = node;
  node_count_.store(node + 1, std::memory_order_release);
}

void VectorPartition::RecordSquaredNorm(uint32_t node) {
  const float squared_norm =
      kernels_.inner_product(vectors_.At(node), vectors_.At(node), options_.dimension);
  *squared_norms_.At(node) = squared_norm;
  // Only the writer raises it (under write_mutex_); readers load it.
  if (squared_norm > max_squared_norm_.load(std::memory_order_relaxed)) {
    max_squared_norm_.store(squared_norm, std::memory_order_release);
  }
}

void VectorPartition::FitQuantizer() {
  const uint32_t count = node_count_.load(std::memory_order_relaxed);
  std::vector<float> sample(size_t{count} * options_.dimension);
  for (uint32_t node = 0; node < count; ++node) {
    std::copy_n(vectors_.At(node), options_.dimension, &sample[size_t{node} * options_.dimension]);
  }
  absl::StatusOr<ScalarQuantizer> fitted =
      ScalarQuantizer::Fit(sample.data(), count, options_.dimension);
  if (!fitted.ok()) return;  // cannot happen: vectors were validated
  quantizer_ = std::make_unique<ScalarQuantizer>(*std::move(fitted));
  for (uint32_t node = 0; node < count; ++node)
    quantizer_->Encode(vectors_.At(node), int8_.At(node));
  published_quantizer_.store(quantizer_.get(), std::memory_order_release);
  auto exhaustive = std::make_shared<Structure>();
  exhaustive->first_stage = FirstStage::kInt8;
  std::atomic_store_explicit(&structure_, std::shared_ptr<const Structure>(exhaustive),
                             std::memory_order_release);
}

absl::Status VectorPartition::Add(uint64_t id, std::span<const float> vector,
                                  std::span<const uint8_t> attributes) {
  return AddBatch({&id, 1}, vector, attributes);
}

absl::Status VectorPartition::AddBatch(std::span<const uint64_t> ids,
                                       std::span<const float> vectors,
                                       std::span<const uint8_t> attributes,
                                       const std::function<void(uint64_t, uint64_t)>& progress) {
  const size_t dim = options_.dimension;
  if (vectors.size() != ids.size() * dim) {
    return absl::InvalidArgumentError(absl::StrCat(vectors.size(), " values given for ", ids.size(),
                                                   " vectors of dimension ", dim));
  }
  if (attributes.size() != ids.size() * options_.attribute_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(attributes.size(), " attribute bytes given for ",
                                                   ids.size(), " vectors of ",
                                                   options_.attribute_bytes));
  }
  for (size_t row = 0; row < ids.size(); ++row) {
    absl::Status valid = Validate(vectors.subspan(row * dim, dim));
    if (!valid.ok())
      return absl::Status(valid.code(), absl::StrCat("id ", ids[row], ": ", valid.message()));
  }
  absl::MutexLock lock(&write_mutex_);
  {
    absl::flat_hash_map<uint64_t, bool> seen;
    for (uint64_t id : ids) {
      if (node_of_id_.contains(id) || !seen.emplace(id, true).second) {
        return absl::AlreadyExistsError(absl::StrCat("id ", id, " is already in the partition"));
      }
    }
  }
  const uint32_t first_new = node_count_.load(std::memory_order_relaxed);
  for (size_t row = 0; row < ids.size(); ++row) {
    AppendNode(ids[row], &vectors[row * dim],
               attributes.empty() ? nullptr : &attributes[row * options_.attribute_bytes]);
    if (quantizer_ == nullptr && node_count_.load() >= options_.quantize_threshold) FitQuantizer();
  }
  const uint32_t count = node_count_.load(std::memory_order_relaxed);
  std::shared_ptr<const Structure> current = structure();
  changes_.fetch_add(1, std::memory_order_relaxed);
  if (current->graph == nullptr) {
    if (quantizer_ != nullptr && count >= options_.graph_threshold) BuildGraph(progress);
    return absl::OkStatus();
  }
  // Link the new nodes into the existing graph, in parallel for big batches.
  VamanaGraph& graph = *current->graph;
  graph.Reserve(count);
  std::unique_ptr<GraphSpace> space = MakeSpace(current->first_stage);
  std::atomic<uint32_t> next{first_new};
  std::atomic<uint64_t> done{0};
  auto work = [&] {
    for (;;) {
      uint32_t node = next.fetch_add(1, std::memory_order_relaxed);
      if (node >= count) return;
      graph.Insert(node, *space);
      uint64_t linked = done.fetch_add(1, std::memory_order_relaxed) + 1;
      if (progress && linked % 4096 == 0) progress(linked, count - first_new);
    }
  };
  const int threads = count - first_new >= 1024 ? build_threads() : 1;
  std::vector<std::thread> workers;
  for (int t = 1; t < threads; ++t) workers.emplace_back(work);
  work();
  for (std::thread& worker : workers) worker.join();
  changes_.fetch_add(1, std::memory_order_relaxed);
  if (count >= 2 * uint64_t{current->calibrated_nodes}) Recalibrate(*current, progress);
  return absl::OkStatus();
}

void VectorPartition::Recalibrate(const Structure& current,
                                  const std::function<void(uint64_t, uint64_t)>& progress) {
  const uint32_t count = node_count_.load(std::memory_order_relaxed);
  auto updated = std::make_shared<Structure>(current);
  const bool binary = current.first_stage == FirstStage::kBinary;
  updated->reached_target =
      Calibrate(*updated, count, ComputeSampleTruth(count, options_.recall_sample),
                binary ? std::min(kMaxBeamWidth, options_.default_beam_width * 4) : kMaxBeamWidth);
  updated->calibrated_nodes = count;
  if (!updated->reached_target && binary && options_.force_first_stage == FirstStage::kExact) {
    // Binary codes stopped reaching the target as the partition grew: build
    // again, which tries binary codes and falls back to INT8 space.
    BuildGraph(progress);
    return;
  }
  std::atomic_store_explicit(&structure_, std::shared_ptr<const Structure>(updated),
                             std::memory_order_release);
}

bool VectorPartition::Remove(uint64_t id) {
  absl::MutexLock lock(&write_mutex_);
  auto found = node_of_id_.find(id);
  if (found == node_of_id_.end()) return false;
  const uint32_t node = found->second;
  node_of_id_.erase(found);
  deleted_.At(node)->store(1, std::memory_order_release);
  deleted_count_.fetch_add(1, std::memory_order_acq_rel);
  changes_.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<const Structure> current = structure();
  if (current->graph != nullptr) current->graph->MarkDeleted(node);
  return true;
}

std::unique_ptr<VectorPartition> VectorPartition::LiveCopy() const {
  std::unique_ptr<VectorPartition> copy(new VectorPartition(options_));
  absl::MutexLock copy_lock(&copy->write_mutex_);
  absl::MutexLock lock(&write_mutex_);
  const uint32_t count = node_count_.load(std::memory_order_acquire);
  for (uint32_t node = 0; node < count; ++node) {
    if (deleted_.At(node)->load(std::memory_order_acquire) != 0) continue;
    copy->AppendNode(*ids_.At(node), vectors_.At(node),
                     options_.attribute_bytes > 0 ? attributes_.At(node) : nullptr,
                     /*prepared=*/true);
    if (copy->quantizer_ == nullptr && copy->node_count_.load() >= options_.quantize_threshold) {
      copy->FitQuantizer();
    }
  }
  copy->changes_.fetch_add(1, std::memory_order_relaxed);
  return copy;
}

bool VectorPartition::graph_due() const {
  return published_quantizer_.load(std::memory_order_acquire) != nullptr &&
         node_count_.load(std::memory_order_acquire) >= options_.graph_threshold &&
         structure()->graph == nullptr && !builds_cancelled();
}

void VectorPartition::BuildGraphIfDue() {
  absl::MutexLock lock(&write_mutex_);
  if (structure()->graph == nullptr && quantizer_ != nullptr &&
      node_count_.load(std::memory_order_relaxed) >= options_.graph_threshold) {
    BuildGraph({});
    changes_.fetch_add(1, std::memory_order_relaxed);
  }
}

uint32_t VectorPartition::Consolidate() {
  absl::MutexLock lock(&write_mutex_);
  std::shared_ptr<const Structure> current = structure();
  if (current->graph == nullptr) return 0;
  changes_.fetch_add(1, std::memory_order_relaxed);
  return current->graph->Consolidate(*MakeSpace(current->first_stage));
}

std::unique_ptr<GraphSpace> VectorPartition::MakeSpace(FirstStage stage) const {
  if (stage == FirstStage::kBinary) return std::make_unique<BinarySpace>(*this);
  return std::make_unique<Int8Space>(*this, *published_quantizer_.load(std::memory_order_acquire));
}

uint32_t VectorPartition::Medoid(uint32_t node_count) const {
  const size_t dim = options_.dimension;
  std::vector<double> sum(dim, 0.0);
  uint32_t live = 0;
  for (uint32_t node = 0; node < node_count; ++node) {
    if (deleted_.At(node)->load(std::memory_order_acquire)) continue;
    const float* vector = vectors_.At(node);
    for (size_t i = 0; i < dim; ++i) sum[i] += vector[i];
    ++live;
  }
  std::vector<float> mean(dim);
  for (size_t i = 0; i < dim; ++i) mean[i] = static_cast<float>(sum[i] / std::max(live, 1u));
  uint32_t best = 0;
  float best_distance = INFINITY;
  for (uint32_t node = 0; node < node_count; ++node) {
    if (deleted_.At(node)->load(std::memory_order_acquire)) continue;
    float distance = kernels_.l2_squared(mean.data(), vectors_.At(node), dim);
    if (distance < best_distance) {
      best_distance = distance;
      best = node;
    }
  }
  return best;
}

std::unique_ptr<VamanaGraph> VectorPartition::BuildGraphIn(
    FirstStage stage, uint32_t node_count, const std::function<void(uint32_t)>& progress) const {
  auto graph = std::make_unique<VamanaGraph>(options_.graph);
  std::unique_ptr<GraphSpace> space = MakeSpace(stage);
  if (!graph->Build(node_count, Medoid(node_count), *space, build_threads(), progress,
                    &builds_cancelled_)) {
    return nullptr;
  }
  for (uint32_t node = 0; node < node_count; ++node) {
    if (deleted_.At(node)->load(std::memory_order_acquire)) graph->MarkDeleted(node);
  }
  return graph;
}

void VectorPartition::BuildGraph(const std::function<void(uint64_t, uint64_t)>& progress) {
  if (builds_cancelled_.load(std::memory_order_relaxed)) return;
  const auto start = std::chrono::steady_clock::now();
  const uint32_t count = node_count_.load(std::memory_order_relaxed);
  auto report = [&](uint32_t done) {
    if (progress) progress(done, count);
  };
  const uint32_t binary_max_beam = std::min(kMaxBeamWidth, options_.default_beam_width * 4);
  const SampleTruth truth = ComputeSampleTruth(count, options_.recall_sample);
  const bool decide = options_.force_first_stage == FirstStage::kExact;

  // Binary codes are tried first when they can work at all: an exhaustive
  // scan of every code, keeping as many candidates as the widest beam allowed,
  // must reach the target. (Codes that cannot tell close vectors apart, as in
  // a dense cluster, fail here, whatever the graph.)
  FirstStage stage = options_.force_first_stage;
  float binary_recall = -1;
  if (decide) {
    Structure scan;
    scan.first_stage = FirstStage::kBinary;
    binary_recall = SampleRecall(scan, count, truth, binary_max_beam);
    stage = binary_recall >= options_.target_recall ? FirstStage::kBinary : FirstStage::kInt8;
  }
  auto build = [&](FirstStage in) -> std::shared_ptr<Structure> {
    auto structure = std::make_shared<Structure>();
    structure->first_stage = in;
    structure->graph = BuildGraphIn(in, count, report);
    if (structure->graph == nullptr) return nullptr;  // cancelled
    structure->reached_target = Calibrate(
        *structure, count, truth, in == FirstStage::kBinary ? binary_max_beam : kMaxBeamWidth);
    return structure;
  };
  std::shared_ptr<Structure> built = build(stage);
  if (built == nullptr) return;  // cancelled: the current structure stays
  if (decide && stage == FirstStage::kBinary) {
    binary_recall = built->sample_recall;
    if (!built->reached_target) {
      // The codes were good but the graph over them is not (binary topology
      // fails on Euclidean-native data such as SIFT): INT8 space instead.
      std::shared_ptr<Structure> int8 = build(FirstStage::kInt8);
      if (int8 == nullptr) return;
      if (int8->reached_target || int8->sample_recall > built->sample_recall) built = int8;
    }
  }
  built->binary_sample_recall = binary_recall;
  built->calibrated_nodes = count;
  built->build_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::atomic_store_explicit(&structure_, std::shared_ptr<const Structure>(built),
                             std::memory_order_release);
}

std::vector<ScoredId> VectorPartition::ExactIn(uint32_t node_count, const float* query, uint32_t k,
                                               const AcceptFunction* accept) const {
  TopK<uint64_t> top(k);
  for (uint32_t node = 0; node < node_count; ++node) {
    if (deleted_.At(node)->load(std::memory_order_acquire)) continue;
    const uint64_t id = *ids_.At(node);
    if (accept != nullptr && !(*accept)(id, attributes_.At(node))) continue;
    top.Push(ExactScore(query, node), id);
  }
  std::vector<ScoredId> results;
  for (auto& [score, id] : top.TakeSorted()) results.push_back({id, score});
  return results;
}

double VectorPartition::EstimateSelectivity(uint32_t node_count,
                                            const AcceptFunction& accept) const {
  constexpr uint32_t kSample = 256;
  const uint32_t sample = std::min(node_count, kSample);
  uint32_t live = 0, accepted = 0;
  for (uint32_t i = 0; i < sample; ++i) {
    const uint32_t node = static_cast<uint32_t>(uint64_t{i} * node_count / sample);
    if (deleted_.At(node)->load(std::memory_order_acquire)) continue;
    ++live;
    accepted += accept(*ids_.At(node), attributes_.At(node)) ? 1 : 0;
  }
  if (live == 0) return 1.0;
  // Half a node when none was seen: small but not zero.
  return std::max(0.5, static_cast<double>(accepted)) / live;
}

std::vector<ScoredId> VectorPartition::SearchIn(const Structure& structure, uint32_t node_count,
                                                const float* query, uint32_t k, uint32_t beam_width,
                                                uint32_t rerank, const AcceptFunction* accept,
                                                SearchTrace* trace) const {
  const ScalarQuantizer* quantizer = published_quantizer_.load(std::memory_order_acquire);
  if (structure.first_stage == FirstStage::kExact || quantizer == nullptr) {
    std::vector<ScoredId> exact = ExactIn(node_count, query, k, accept);
    if (trace != nullptr) {
      const uint32_t n = static_cast<uint32_t>(exact.size());
      *trace = {.exhaustive = true, .window = n, .deepest = n, .agreement = n, .returned = n};
    }
    return exact;
  }
  if (beam_width == 0) {
    beam_width = structure.default_beam_width != 0 ? structure.default_beam_width
                                                   : options_.default_beam_width;
  }
  if (rerank == 0) {
    rerank = std::max({40u, options_.default_rerank_factor * k, beam_width / 2});
  }
  rerank = std::max(rerank, k);
  beam_width = std::max(beam_width, rerank);

  auto live = [&](uint32_t node) {
    if (deleted_.At(node)->load(std::memory_order_acquire)) return false;
    return accept == nullptr || (*accept)(*ids_.At(node), attributes_.At(node));
  };
  std::unique_ptr<GraphSpace::Point> point;
  if (structure.first_stage == FirstStage::kBinary) {
    point = BinarySpace(*this).QueryPoint(query);
  } else {
    point = Int8Space(*this, *quantizer).QueryPoint(query);
  }

  // First stage: the graph's beam, or every accepted code. A beam walks the
  // unfiltered neighbourhood and keeps the accepted nodes it passes, so a
  // filter that accepts a fraction s of the nodes leaves a beam of width L
  // about s * L of them: the walk is widened to L / s (s estimated on a
  // sample). When that walk would cost more than scanning the accepted
  // nodes' codes outright (or exceed the index's beam limit), or still finds
  // fewer than L accepted nodes, the codes are scanned: with only the
  // unwidened beam, 1 filter in 10 gave recall@10 0.59.
  std::vector<Neighbor> candidates;
  bool scan_codes = structure.graph == nullptr;
  uint32_t walk_width = beam_width;
  if (accept != nullptr && structure.graph != nullptr) {
    const double selectivity = EstimateSelectivity(node_count, *accept);
    const double widened = std::ceil(beam_width / selectivity);
    if (widened > kMaxBeamWidth || selectivity * node_count <= 8 * widened) {
      scan_codes = true;
    } else {
      walk_width = static_cast<uint32_t>(widened);
    }
  }
  if (!scan_codes) {
    candidates = structure.graph->Search(*point, walk_width, walk_width, live);
    scan_codes = accept != nullptr && candidates.size() < beam_width;
  }
  if (scan_codes) {
    std::vector<uint32_t> nodes;
    for (uint32_t node = 0; node < node_count; ++node) {
      if (live(node)) nodes.push_back(node);
    }
    // Scanned with INT8 codes even in binary mode: the scan is already
    // exhaustive, and binary distances are too coarse to keep the true
    // neighbours within the beam (recall@10 0.86 with 1 filter in 2).
    std::unique_ptr<GraphSpace::Point> int8_point;
    if (structure.first_stage == FirstStage::kBinary) {
      int8_point = Int8Space(*this, *quantizer).QueryPoint(query);
    }
    const GraphSpace::Point& scan_point = int8_point != nullptr ? *int8_point : *point;
    std::vector<float> distances(nodes.size());
    scan_point.Distances(nodes.data(), nodes.size(), distances.data());
    candidates.resize(nodes.size());
    for (size_t i = 0; i < nodes.size(); ++i) candidates[i] = {nodes[i], distances[i]};
    auto by_distance = [](const Neighbor& a, const Neighbor& b) { return a.distance < b.distance; };
    if (candidates.size() > beam_width) {
      std::partial_sort(candidates.begin(), candidates.begin() + beam_width, candidates.end(),
                        by_distance);
      candidates.resize(beam_width);
    } else {
      std::sort(candidates.begin(), candidates.end(), by_distance);
    }
  }

  // INT8 stage (binary mode): re-rank the beam with INT8 distances.
  if (structure.first_stage == FirstStage::kBinary && candidates.size() > rerank) {
    ScalarQuantizer::Query int8_query =
        quantizer->Prepare({query, options_.dimension}, options_.metric);
    for (Neighbor& candidate : candidates) {
      candidate.distance = int8_query.Distance(int8_.At(candidate.node));
    }
    std::partial_sort(candidates.begin(), candidates.begin() + rerank, candidates.end(),
                      [](const Neighbor& a, const Neighbor& b) { return a.distance < b.distance; });
  }
  if (candidates.size() > rerank) candidates.resize(rerank);

  // Final stage: exact float scores. Items are positions in the quantized
  // order, so the trace can say where the final top k came from.
  TopK<uint32_t> top(k);
  for (uint32_t i = 0; i < candidates.size(); ++i) {
    top.Push(ExactScore(query, candidates[i].node), i);
  }
  std::vector<ScoredId> results;
  uint32_t deepest = 0, agreement = 0;
  for (auto& [score, position] : top.TakeSorted()) {
    results.push_back({*ids_.At(candidates[position].node), score});
    deepest = std::max(deepest, position + 1);
    agreement += position < k ? 1 : 0;
  }
  if (trace != nullptr) {
    *trace = {.exhaustive = false,
              .window = static_cast<uint32_t>(candidates.size()),
              .deepest = deepest,
              .agreement = agreement,
              .returned = static_cast<uint32_t>(results.size()),
              .sample_recall = structure.sample_recall};
  }
  return results;
}

absl::StatusOr<std::vector<ScoredId>> VectorPartition::Search(const PartitionSearch& search) const {
  if (search.k == 0 || search.k > kMaxK) {
    return absl::InvalidArgumentError(absl::StrCat("k is ", search.k, "; must be in 1..", kMaxK));
  }
  if (search.beam_width > kMaxBeamWidth) {
    return absl::InvalidArgumentError(
        absl::StrCat("beam width is ", search.beam_width, "; must be at most ", kMaxBeamWidth));
  }
  if (search.rerank > kMaxBeamWidth) {
    return absl::InvalidArgumentError(
        absl::StrCat("rerank is ", search.rerank, "; must be at most ", kMaxBeamWidth));
  }
  absl::Status valid = Validate(search.query);
  if (!valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("query: ", valid.message()));
  }
  std::vector<float> query = PrepareQuery(search.query);
  std::shared_ptr<const Structure> current = structure();
  return SearchIn(*current, node_count_.load(std::memory_order_acquire), query.data(), search.k,
                  search.beam_width, search.rerank, search.accept, search.trace);
}

std::vector<ScoredId> VectorPartition::ExactSearch(std::span<const float> query, uint32_t k,
                                                   const AcceptFunction* accept) const {
  std::vector<float> prepared = PrepareQuery(query);
  return ExactIn(node_count_.load(std::memory_order_acquire), prepared.data(), k, accept);
}

VectorPartition::SampleTruth VectorPartition::ComputeSampleTruth(uint32_t node_count,
                                                                 uint32_t sample) const {
  std::vector<uint32_t> live;
  for (uint32_t node = 0; node < node_count; ++node) {
    if (!deleted_.At(node)->load(std::memory_order_acquire)) live.push_back(node);
  }
  SampleTruth truth;
  if (live.size() <= kRecallAt || sample == 0) return truth;
  const size_t step = std::max<size_t>(1, live.size() / sample);
  for (size_t i = 0; i < live.size() && truth.queries.size() < sample; i += step) {
    truth.queries.push_back(live[i]);
  }
  // Each thread streams a slice of the vectors once against every sample
  // query (the queries stay in cache), keeping its own top-k per query.
  const size_t queries = truth.queries.size();
  const int threads = build_threads();
  std::vector<std::vector<TopK<uint32_t>>> partial(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::vector<TopK<uint32_t>>& tops = partial[t];
      tops.assign(queries, TopK<uint32_t>(kRecallAt + 1));
      for (size_t i = t; i < live.size(); i += threads) {
        for (size_t q = 0; q < queries; ++q) {
          tops[q].Push(ExactScore(vectors_.At(truth.queries[q]), live[i]), live[i]);
        }
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
  truth.neighbor_ids.resize(queries);
  for (size_t q = 0; q < queries; ++q) {
    TopK<uint32_t> merged(kRecallAt + 1);
    for (auto& tops : partial) {
      for (auto& [score, node] : tops[q].TakeSorted()) merged.Push(score, node);
    }
    for (auto& [score, node] : merged.TakeSorted()) {
      if (node != truth.queries[q] && truth.neighbor_ids[q].size() < kRecallAt) {
        truth.neighbor_ids[q].push_back(*ids_.At(node));
      }
    }
  }
  return truth;
}

float VectorPartition::SampleRecall(const Structure& structure, uint32_t node_count,
                                    const SampleTruth& truth, uint32_t beam_width) const {
  if (truth.queries.empty()) return 1.0f;
  std::atomic<uint64_t> hits{0};
  std::atomic<size_t> next{0};
  std::vector<std::thread> workers;
  auto work = [&] {
    for (;;) {
      size_t q = next.fetch_add(1);
      if (q >= truth.queries.size()) return;
      const uint64_t self_id = *ids_.At(truth.queries[q]);
      const std::vector<uint64_t>& expected = truth.neighbor_ids[q];
      std::vector<ScoredId> found = SearchIn(structure, node_count, vectors_.At(truth.queries[q]),
                                             kRecallAt + 1, beam_width, 0, nullptr);
      size_t taken = 0;
      for (const ScoredId& result : found) {
        if (result.id == self_id || taken == kRecallAt) continue;
        ++taken;
        if (std::find(expected.begin(), expected.end(), result.id) != expected.end()) {
          hits.fetch_add(1, std::memory_order_relaxed);
        }
      }
    }
  };
  for (int t = 1; t < build_threads(); ++t) workers.emplace_back(work);
  work();
  for (std::thread& worker : workers) worker.join();
  return static_cast<float>(hits.load()) / static_cast<float>(truth.queries.size() * kRecallAt);
}

bool VectorPartition::Calibrate(Structure& structure, uint32_t node_count, const SampleTruth& truth,
                                uint32_t max_beam_width) const {
  // Steps of 1.5x, not 2x: a graph just short of the target at 64 serves at
  // 96 rather than 128 (search cost grows about linearly with L).
  for (uint32_t beam = options_.default_beam_width;; beam = std::max(beam + 1, beam * 3 / 2)) {
    beam = std::min(beam, max_beam_width);
    structure.default_beam_width = beam;
    structure.sample_recall = SampleRecall(structure, node_count, truth, beam);
    if (structure.sample_recall >= options_.target_recall) return true;
    if (beam >= max_beam_width) return false;
  }
}

PartitionStats VectorPartition::Stats() const {
  std::shared_ptr<const Structure> current = structure();
  PartitionStats stats;
  stats.vectors = size();
  stats.deleted = deleted_count_.load(std::memory_order_acquire);
  stats.first_stage = current->first_stage;
  stats.has_graph = current->graph != nullptr;
  stats.sample_recall = current->sample_recall;
  stats.default_beam_width =
      current->default_beam_width != 0 ? current->default_beam_width : options_.default_beam_width;
  stats.binary_sample_recall = current->binary_sample_recall;
  stats.binary_code_bytes = binary_.memory_bytes();
  stats.int8_code_bytes = int8_.memory_bytes();
  stats.code_bytes = stats.binary_code_bytes + stats.int8_code_bytes;
  stats.graph_bytes = current->graph != nullptr ? current->graph->memory_bytes() : 0;
  stats.float_bytes = vectors_.memory_bytes();
  stats.last_build_seconds = current->build_seconds;
  return stats;
}

}  // namespace engram::index
