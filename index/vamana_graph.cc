#include "index/vamana_graph.h"

#include <algorithm>
#include <numeric>
#include <random>
#include <thread>

namespace engram::index {

namespace {

// Marks nodes seen by one search. Reused across searches on a thread: a node
// is visited when its tag equals the current epoch, so clearing is O(1).
class VisitedTable {
 public:
  static VisitedTable& ForThisThread(uint32_t node_count) {
    thread_local VisitedTable table;
    table.Begin(node_count);
    return table;
  }
  // True the first time `node` is seen in this search.
  bool Visit(uint32_t node) {
    // Nodes reserved after this search began are beyond the table.
    if (node >= tags_.size()) tags_.resize(node + node / 4 + 1024, 0);
    if (tags_[node] == epoch_) return false;
    tags_[node] = epoch_;
    return true;
  }

 private:
  void Begin(uint32_t node_count) {
    if (tags_.size() < node_count) tags_.resize(node_count + node_count / 4 + 1024, 0);
    if (++epoch_ == 0) {
      std::fill(tags_.begin(), tags_.end(), 0);
      epoch_ = 1;
    }
  }
  std::vector<uint32_t> tags_;
  uint32_t epoch_ = 0;
};

// The beam: up to `capacity` nodes sorted by distance, each marked expanded or
// not, with a cursor at the closest unexpanded one.
class Beam {
 public:
  explicit Beam(uint32_t capacity) : capacity_(capacity) { entries_.reserve(capacity + 1); }
  bool WouldAccept(float distance) const {
    return entries_.size() < capacity_ || distance < entries_.back().distance;
  }
  void Insert(uint32_t node, float distance) {
    auto position =
        std::upper_bound(entries_.begin(), entries_.end(), distance,
                         [](float d, const Entry& entry) { return d < entry.distance; });
    size_t index = static_cast<size_t>(position - entries_.begin());
    entries_.insert(position, Entry{node, distance, false});
    if (entries_.size() > capacity_) entries_.pop_back();
    if (index < cursor_) cursor_ = index;
  }
  // The closest unexpanded node, marked expanded; false when none is left.
  bool NextToExpand(Neighbor* next) {
    while (cursor_ < entries_.size() && entries_[cursor_].expanded) ++cursor_;
    if (cursor_ >= entries_.size()) return false;
    entries_[cursor_].expanded = true;
    *next = {entries_[cursor_].node, entries_[cursor_].distance};
    return true;
  }

 private:
  struct Entry {
    uint32_t node;
    float distance;
    bool expanded;
  };
  uint32_t capacity_;
  std::vector<Entry> entries_;
  size_t cursor_ = 0;
};

// Keeps the `count` closest accepted nodes.
class ResultHeap {
 public:
  explicit ResultHeap(uint32_t count) : count_(count) { heap_.reserve(count + 1); }
  void Push(uint32_t node, float distance) {
    if (count_ == 0) return;
    if (heap_.size() == count_ && !(distance < heap_.front().distance)) return;
    heap_.push_back({node, distance});
    std::push_heap(heap_.begin(), heap_.end(), Closer);
    if (heap_.size() > count_) {
      std::pop_heap(heap_.begin(), heap_.end(), Closer);
      heap_.pop_back();
    }
  }
  std::vector<Neighbor> TakeSorted() {
    std::sort_heap(heap_.begin(), heap_.end(), Closer);
    return std::move(heap_);
  }

 private:
  // Max-heap on distance: the root is the farthest kept node.
  static bool Closer(const Neighbor& a, const Neighbor& b) { return a.distance < b.distance; }
  uint32_t count_;
  std::vector<Neighbor> heap_;
};

}  // namespace

VamanaGraph::VamanaGraph(const VamanaParams& params, bool navigation_layer)
    : params_(params),
      slack_degree_(params.max_degree + (params.max_degree * 3 + 9) / 10),
      slots_per_node_(slack_degree_ + 1),
      slots_(slots_per_node_),
      flags_(1),
      locks_(new std::mutex[kLockStripes]) {
  if (navigation_layer) navigation_ = std::make_unique<VamanaGraph>(params, false);
}

// A point of the main graph seen from the navigation layer: layer ids are
// translated to main ids before the distances are computed.
class VamanaGraph::MappedPoint final : public GraphSpace::Point {
 public:
  MappedPoint(const VamanaGraph& graph, const GraphSpace::Point& point)
      : graph_(graph), point_(point) {}
  MappedPoint(const VamanaGraph& graph, std::unique_ptr<GraphSpace::Point> owned)
      : graph_(graph), point_(*owned), owned_(std::move(owned)) {}
  void Distances(const uint32_t* nodes, size_t count, float* out) const override {
    thread_local std::vector<uint32_t> mapped;
    mapped.resize(count);
    for (size_t i = 0; i < count; ++i) mapped[i] = *graph_.navigation_nodes_.At(nodes[i]);
    point_.Distances(mapped.data(), count, out);
  }

 private:
  const VamanaGraph& graph_;
  const GraphSpace::Point& point_;
  std::unique_ptr<GraphSpace::Point> owned_;
};

class VamanaGraph::MappedSpace final : public GraphSpace {
 public:
  MappedSpace(const VamanaGraph& graph, const GraphSpace& space) : graph_(graph), space_(space) {}
  std::unique_ptr<Point> NodePoint(uint32_t node) const override {
    return std::make_unique<MappedPoint>(graph_,
                                         space_.NodePoint(*graph_.navigation_nodes_.At(node)));
  }

 private:
  const VamanaGraph& graph_;
  const GraphSpace& space_;
};

bool VamanaGraph::InNavigationLayer(uint32_t node) {
  return ((node * 0x9E3779B1u) >> 27) == 0;  // 1 in 32, spread over the ids
}

void VamanaGraph::AddToNavigation(uint32_t node, const GraphSpace& space) {
  if (navigation_ == nullptr || !InNavigationLayer(node)) return;
  const uint32_t local = navigation_count_.fetch_add(1, std::memory_order_acq_rel);
  {
    std::lock_guard lock(navigation_mutex_);
    navigation_nodes_.Reserve(local + 1);
  }
  *navigation_nodes_.At(local) = node;
  navigation_->Reserve(local + 1);
  navigation_->Insert(local, MappedSpace(*this, space));
}

void VamanaGraph::FindEntries(const GraphSpace::Point& query,
                              std::vector<uint32_t>* entries) const {
  if (navigation_ == nullptr || navigation_->entry_point() == kNoNode) return;
  constexpr uint32_t kNavigationBeam = 32;
  constexpr uint32_t kNavigationEntries = 4;
  MappedPoint mapped(*this, query);
  for (const Neighbor& found : navigation_->Search(
           mapped, kNavigationBeam, kNavigationEntries,
           [this](uint32_t local) { return !IsRemoved(*navigation_nodes_.At(local)); })) {
    entries->push_back(*navigation_nodes_.At(found.node));
  }
}

VamanaGraph::~VamanaGraph() = default;

void VamanaGraph::Reserve(uint32_t count) {
  std::lock_guard lock(grow_mutex_);
  slots_.Reserve(count);  // zero-initialised: every node starts with no edges
  flags_.Reserve(count);
  if (node_count_.load(std::memory_order_relaxed) < count) {
    node_count_.store(count, std::memory_order_release);
  }
}

std::atomic<uint32_t>* VamanaGraph::Slots(uint32_t node) const { return slots_.At(node); }

std::atomic<uint8_t>& VamanaGraph::Flags(uint32_t node) const { return *flags_.At(node); }

std::vector<uint32_t> VamanaGraph::Neighbors(uint32_t node) const {
  const std::atomic<uint32_t>* slots = Slots(node);
  uint32_t count = std::min(slots[0].load(std::memory_order_acquire), slack_degree_);
  std::vector<uint32_t> neighbors(count);
  for (uint32_t i = 0; i < count; ++i) neighbors[i] = slots[1 + i].load(std::memory_order_acquire);
  return neighbors;
}

void VamanaGraph::WriteNeighbors(uint32_t node, const std::vector<uint32_t>& neighbors) {
  std::atomic<uint32_t>* slots = Slots(node);
  const uint32_t count = std::min<uint32_t>(neighbors.size(), slack_degree_);
  // Slots first, count last: a reader that sees the new count sees the slots.
  for (uint32_t i = 0; i < count; ++i) slots[1 + i].store(neighbors[i], std::memory_order_release);
  slots[0].store(count, std::memory_order_release);
}

void VamanaGraph::MarkDeleted(uint32_t node) {
  uint8_t before = Flags(node).fetch_or(kDeleted, std::memory_order_acq_rel);
  if (!(before & kDeleted)) deleted_count_.fetch_add(1, std::memory_order_relaxed);
}

bool VamanaGraph::IsDeleted(uint32_t node) const {
  return Flags(node).load(std::memory_order_acquire) & kDeleted;
}

bool VamanaGraph::IsRemoved(uint32_t node) const {
  return Flags(node).load(std::memory_order_acquire) & kRemoved;
}

void VamanaGraph::MarkRemovedForLoad(uint32_t node) {
  uint8_t before = Flags(node).fetch_or(kDeleted | kRemoved, std::memory_order_acq_rel);
  if (!(before & kDeleted)) deleted_count_.fetch_add(1, std::memory_order_relaxed);
}

size_t VamanaGraph::memory_bytes() const {
  size_t bytes = slots_.memory_bytes() + flags_.memory_bytes();
  if (navigation_ != nullptr) {
    bytes += navigation_->memory_bytes() + navigation_nodes_.memory_bytes();
  }
  return bytes;
}

std::vector<Neighbor> VamanaGraph::BeamSearch(const GraphSpace::Point& query, uint32_t beam_width,
                                              uint32_t count,
                                              absl::FunctionRef<bool(uint32_t)> accept,
                                              std::vector<Neighbor>* expanded) const {
  const uint32_t entry = entry_point();
  if (entry == kNoNode || count == 0) return {};
  std::vector<uint32_t> starts = {entry};
  FindEntries(query, &starts);  // before taking the visited table: it walks another graph
  VisitedTable& visited = VisitedTable::ForThisThread(node_count());
  Beam beam(std::max(beam_width, 1u));
  ResultHeap results(count);

  std::vector<float> start_distances(starts.size());
  query.Distances(starts.data(), starts.size(), start_distances.data());
  for (size_t i = 0; i < starts.size(); ++i) {
    if (!visited.Visit(starts[i])) continue;
    beam.Insert(starts[i], start_distances[i]);
    if (!IsDeleted(starts[i]) && accept(starts[i])) results.Push(starts[i], start_distances[i]);
  }

  std::vector<uint32_t> fresh;
  std::vector<float> distances;
  fresh.reserve(slack_degree_);
  distances.resize(slack_degree_);
  Neighbor current;
  while (beam.NextToExpand(&current)) {
    if (expanded != nullptr) expanded->push_back(current);
    const std::atomic<uint32_t>* slots = Slots(current.node);
    uint32_t degree = std::min(slots[0].load(std::memory_order_acquire), slack_degree_);
    fresh.clear();
    for (uint32_t i = 0; i < degree; ++i) {
      uint32_t neighbor = slots[1 + i].load(std::memory_order_acquire);
      if (visited.Visit(neighbor)) fresh.push_back(neighbor);
    }
    if (fresh.empty()) continue;
    query.Distances(fresh.data(), fresh.size(), distances.data());
    for (size_t i = 0; i < fresh.size(); ++i) {
      if (beam.WouldAccept(distances[i])) beam.Insert(fresh[i], distances[i]);
      if (!IsDeleted(fresh[i]) && accept(fresh[i])) results.Push(fresh[i], distances[i]);
    }
  }
  return results.TakeSorted();
}

std::vector<Neighbor> VamanaGraph::Search(const GraphSpace::Point& query, uint32_t beam_width,
                                          uint32_t count,
                                          absl::FunctionRef<bool(uint32_t)> accept) const {
  return BeamSearch(query, std::max(beam_width, count), count, accept, nullptr);
}

std::vector<Neighbor> VamanaGraph::Search(const GraphSpace::Point& query, uint32_t beam_width,
                                          uint32_t count) const {
  return Search(query, beam_width, count, [](uint32_t) { return true; });
}

std::vector<uint32_t> VamanaGraph::RobustPrune(uint32_t node, std::vector<Neighbor> candidates,
                                               const GraphSpace& space) const {
  std::sort(candidates.begin(), candidates.end(), [](const Neighbor& a, const Neighbor& b) {
    return a.distance < b.distance || (a.distance == b.distance && a.node < b.node);
  });
  // Drop duplicates (adjacent after the sort: same node, same distance), the
  // node itself and nodes that are going away.
  size_t kept = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const Neighbor& c = candidates[i];
    if (c.node == node || IsDeleted(c.node)) continue;
    if (kept > 0 && candidates[kept - 1].node == c.node) continue;
    candidates[kept++] = c;
  }
  candidates.resize(kept);

  std::vector<uint32_t> chosen;
  chosen.reserve(params_.max_degree);
  std::vector<bool> pruned(candidates.size(), false);
  std::vector<uint32_t> rest;
  std::vector<size_t> rest_index;
  std::vector<float> distances;
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (pruned[i]) continue;
    chosen.push_back(candidates[i].node);
    if (chosen.size() == params_.max_degree) break;
    rest.clear();
    rest_index.clear();
    for (size_t j = i + 1; j < candidates.size(); ++j) {
      if (!pruned[j]) {
        rest.push_back(candidates[j].node);
        rest_index.push_back(j);
      }
    }
    if (rest.empty()) break;
    distances.resize(rest.size());
    space.NodePoint(candidates[i].node)->Distances(rest.data(), rest.size(), distances.data());
    for (size_t r = 0; r < rest.size(); ++r) {
      if (params_.alpha * distances[r] <= candidates[rest_index[r]].distance) {
        pruned[rest_index[r]] = true;
      }
    }
  }
  return chosen;
}

void VamanaGraph::AddEdge(uint32_t source, uint32_t target, const GraphSpace& space) {
  std::lock_guard lock(LockFor(source));
  std::atomic<uint32_t>* slots = Slots(source);
  uint32_t degree = slots[0].load(std::memory_order_acquire);
  for (uint32_t i = 0; i < degree; ++i) {
    if (slots[1 + i].load(std::memory_order_relaxed) == target) return;
  }
  // Room left up to the slack degree: append. Full: prune back to R, so a
  // node pays for a prune once per ~0.3 R new in-edges, not on every one.
  if (degree < slack_degree_) {
    slots[1 + degree].store(target, std::memory_order_release);
    slots[0].store(degree + 1, std::memory_order_release);
    return;
  }
  std::vector<uint32_t> pool = Neighbors(source);
  pool.push_back(target);
  std::vector<float> distances(pool.size());
  space.NodePoint(source)->Distances(pool.data(), pool.size(), distances.data());
  std::vector<Neighbor> candidates(pool.size());
  for (size_t i = 0; i < pool.size(); ++i) candidates[i] = {pool[i], distances[i]};
  WriteNeighbors(source, RobustPrune(source, std::move(candidates), space));
}

void VamanaGraph::Insert(uint32_t node, const GraphSpace& space) {
  uint32_t no_entry = kNoNode;
  if (entry_point_.compare_exchange_strong(no_entry, node, std::memory_order_acq_rel)) {
    AddToNavigation(node, space);
    return;
  }
  std::unique_ptr<GraphSpace::Point> point = space.NodePoint(node);
  std::vector<Neighbor> expanded;
  BeamSearch(
      *point, params_.build_beam_width, 1, [](uint32_t) { return false; }, &expanded);
  std::vector<uint32_t> neighbors = RobustPrune(node, std::move(expanded), space);
  {
    std::lock_guard lock(LockFor(node));
    WriteNeighbors(node, neighbors);
  }
  for (uint32_t neighbor : neighbors) AddEdge(neighbor, node, space);
  AddToNavigation(node, space);
}

bool VamanaGraph::Build(uint32_t count, uint32_t entry, const GraphSpace& space, int threads,
                        const std::function<void(uint32_t)>& progress,
                        const std::atomic<bool>* cancel) {
  if (count == 0) return true;
  Reserve(count);
  if (entry_point() == kNoNode) {
    SetEntryPoint(entry);
    AddToNavigation(entry, space);
  }
  std::vector<uint32_t> order;
  order.reserve(count);
  for (uint32_t node = 0; node < count; ++node) {
    if (node != entry_point()) order.push_back(node);
  }
  std::shuffle(order.begin(), order.end(), std::mt19937(count));
  std::atomic<size_t> next{0};
  std::atomic<uint32_t> done{0};
  auto work = [&] {
    for (;;) {
      if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) return;
      size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= order.size()) return;
      Insert(order[i], space);
      uint32_t linked = done.fetch_add(1, std::memory_order_relaxed) + 1;
      if (progress && linked % 4096 == 0) progress(linked);
    }
  };
  std::vector<std::thread> workers;
  for (int t = 1; t < threads; ++t) workers.emplace_back(work);
  work();
  for (std::thread& worker : workers) worker.join();
  if (cancel != nullptr && cancel->load(std::memory_order_relaxed)) return false;
  PruneToMaxDegree(count, space, threads);
  ConnectUnreachable(space);
  if (progress) progress(static_cast<uint32_t>(order.size()));
  return true;
}

uint32_t VamanaGraph::ConnectUnreachable(const GraphSpace& space) {
  const uint32_t count = node_count();
  const uint32_t entry = entry_point();
  if (entry == kNoNode) return 0;
  std::vector<bool> reached(count, false);
  std::vector<uint32_t> stack;
  auto mark_from = [&](uint32_t start) {
    reached[start] = true;
    stack.push_back(start);
    while (!stack.empty()) {
      uint32_t node = stack.back();
      stack.pop_back();
      for (uint32_t neighbor : Neighbors(node)) {
        if (neighbor < count && !reached[neighbor]) {
          reached[neighbor] = true;
          stack.push_back(neighbor);
        }
      }
    }
  };
  mark_from(entry);
  uint32_t connected = 0;
  for (uint32_t node = 0; node < count; ++node) {
    if (reached[node] || IsDeleted(node)) continue;
    // Link the closest reached node that has room below R to it (or, if
    // every close one is full, the closest, past R into its slack).
    std::vector<Neighbor> near =
        Search(*space.NodePoint(node), params_.build_beam_width, 8,
               [&](uint32_t candidate) { return candidate < count && reached[candidate]; });
    if (near.empty()) continue;
    uint32_t source = near.front().node;
    for (const Neighbor& candidate : near) {
      if (Slots(candidate.node)[0].load(std::memory_order_acquire) < params_.max_degree) {
        source = candidate.node;
        break;
      }
    }
    {
      std::lock_guard lock(LockFor(source));
      std::atomic<uint32_t>* slots = Slots(source);
      uint32_t degree = slots[0].load(std::memory_order_acquire);
      if (degree < slack_degree_) {
        slots[1 + degree].store(node, std::memory_order_release);
        slots[0].store(degree + 1, std::memory_order_release);
      } else {
        slots[slack_degree_].store(node, std::memory_order_release);
      }
    }
    ++connected;
    mark_from(node);
  }
  return connected;
}

void VamanaGraph::PruneToMaxDegree(uint32_t count, const GraphSpace& space, int threads) {
  std::atomic<uint32_t> next{0};
  auto work = [&] {
    std::vector<float> distances;
    std::vector<Neighbor> candidates;
    for (;;) {
      uint32_t node = next.fetch_add(1, std::memory_order_relaxed);
      if (node >= count) return;
      std::lock_guard lock(LockFor(node));
      std::vector<uint32_t> neighbors = Neighbors(node);
      if (neighbors.size() <= params_.max_degree) continue;
      distances.resize(neighbors.size());
      space.NodePoint(node)->Distances(neighbors.data(), neighbors.size(), distances.data());
      candidates.resize(neighbors.size());
      for (size_t i = 0; i < neighbors.size(); ++i) candidates[i] = {neighbors[i], distances[i]};
      WriteNeighbors(node, RobustPrune(node, candidates, space));
    }
  };
  std::vector<std::thread> workers;
  for (int t = 1; t < threads; ++t) workers.emplace_back(work);
  work();
  for (std::thread& worker : workers) worker.join();
}

uint32_t VamanaGraph::Consolidate(const GraphSpace& space) {
  std::lock_guard consolidate_lock(consolidate_mutex_);
  const uint32_t count = node_count();
  std::vector<bool> going(count, false);
  uint32_t going_count = 0;
  for (uint32_t node = 0; node < count; ++node) {
    uint8_t flags = Flags(node).load(std::memory_order_acquire);
    if ((flags & kDeleted) && !(flags & kRemoved)) {
      going[node] = true;
      ++going_count;
    }
  }
  if (going_count == 0) return 0;

  // A deleted entry point hands over to the closest live node it can reach.
  uint32_t entry = entry_point();
  if (entry != kNoNode && IsDeleted(entry)) {
    std::vector<Neighbor> live =
        Search(*space.NodePoint(entry), params_.build_beam_width, 1,
               [](uint32_t) { return true; });  // deleted nodes are never returned
    SetEntryPoint(live.empty() ? kNoNode : live.front().node);
  }

  std::vector<Neighbor> candidates;
  std::vector<uint32_t> pool;
  std::vector<float> distances;
  for (uint32_t node = 0; node < count; ++node) {
    if (IsDeleted(node)) continue;
    std::lock_guard lock(LockFor(node));
    std::vector<uint32_t> neighbors = Neighbors(node);
    bool touches_deleted = false;
    for (uint32_t neighbor : neighbors) touches_deleted |= neighbor < count && going[neighbor];
    if (!touches_deleted) continue;
    pool.clear();
    for (uint32_t neighbor : neighbors) {
      if (!(neighbor < count && going[neighbor])) {
        pool.push_back(neighbor);
        continue;
      }
      for (uint32_t second : Neighbors(neighbor)) {
        if (second != node && !IsDeleted(second)) pool.push_back(second);
      }
    }
    std::sort(pool.begin(), pool.end());
    pool.erase(std::unique(pool.begin(), pool.end()), pool.end());
    distances.resize(pool.size());
    space.NodePoint(node)->Distances(pool.data(), pool.size(), distances.data());
    candidates.resize(pool.size());
    for (size_t i = 0; i < pool.size(); ++i) candidates[i] = {pool[i], distances[i]};
    WriteNeighbors(node, pool.size() <= params_.max_degree
                             ? pool
                             : RobustPrune(node, std::move(candidates), space));
  }
  for (uint32_t node = 0; node < count; ++node) {
    if (!going[node]) continue;
    std::lock_guard lock(LockFor(node));
    Slots(node)[0].store(0, std::memory_order_release);
    Flags(node).fetch_or(kRemoved, std::memory_order_acq_rel);
  }
  ConnectUnreachable(space);
  return going_count;
}

}  // namespace engram::index

namespace engram::index {

namespace {
constexpr uint8_t kSavedDeleted = 1;
constexpr uint8_t kSavedRemoved = 2;
}  // namespace

void VamanaGraph::Save(SnapshotWriter& out, uint32_t node_limit) const {
  const uint32_t nodes = std::min(node_count(), node_limit);
  out.Put(entry_point());
  out.Put(nodes);
  for (uint32_t node = 0; node < nodes; ++node) {
    const uint8_t flags =
        (IsDeleted(node) ? kSavedDeleted : 0) | (IsRemoved(node) ? kSavedRemoved : 0);
    std::vector<uint32_t> neighbors = Neighbors(node);
    out.Put(flags);
    out.Put(static_cast<uint32_t>(neighbors.size()));
    out.Write(neighbors.data(), neighbors.size() * sizeof(uint32_t));
  }
  const uint32_t layer = navigation_ == nullptr ? 0 : navigation_->node_count();
  out.Put<uint8_t>(navigation_ != nullptr);
  if (navigation_ == nullptr) return;
  out.Put(layer);
  for (uint32_t local = 0; local < layer; ++local) out.Put(*navigation_nodes_.At(local));
  navigation_->Save(out, layer);
}

std::unique_ptr<VamanaGraph> VamanaGraph::Load(SnapshotReader& in, const VamanaParams& params,
                                               uint32_t node_limit, bool navigation_layer) {
  auto graph = std::make_unique<VamanaGraph>(params, navigation_layer);
  uint32_t entry = 0, nodes = 0;
  if (!in.Get(&entry) || !in.Get(&nodes) || nodes > node_limit ||
      (entry >= nodes && entry != kNoNode)) {
    return nullptr;
  }
  graph->Reserve(nodes);
  std::vector<uint32_t> neighbors;
  for (uint32_t node = 0; node < nodes; ++node) {
    uint8_t flags = 0;
    uint32_t degree = 0;
    if (!in.Get(&flags) || !in.Get(&degree) || degree > graph->slack_degree()) return nullptr;
    neighbors.resize(degree);
    if (!in.Read(neighbors.data(), degree * sizeof(uint32_t))) return nullptr;
    for (uint32_t neighbor : neighbors) {
      if (neighbor >= nodes) return nullptr;
    }
    graph->WriteNeighbors(node, neighbors);
    if (flags & kSavedRemoved) {
      graph->MarkRemovedForLoad(node);
    } else if (flags & kSavedDeleted) {
      graph->MarkDeleted(node);
    }
  }
  graph->SetEntryPoint(entry);
  uint8_t has_layer = 0;
  if (!in.Get(&has_layer) || (has_layer != 0) != navigation_layer) return nullptr;
  if (!has_layer) return graph;
  uint32_t layer = 0;
  if (!in.Get(&layer) || layer > nodes) return nullptr;
  graph->navigation_nodes_.Reserve(layer);
  for (uint32_t local = 0; local < layer; ++local) {
    uint32_t node = 0;
    if (!in.Get(&node) || node >= nodes) return nullptr;
    *graph->navigation_nodes_.At(local) = node;
  }
  graph->navigation_count_.store(layer, std::memory_order_release);
  graph->navigation_ = Load(in, params, layer, false);
  if (graph->navigation_ == nullptr) return nullptr;
  return graph;
}

}  // namespace engram::index
