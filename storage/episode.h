// Engram's domain types for episodic memory: spaces, episodes and the
// requests the store accepts. Plain C++ with no RocksDB, protobuf or gRPC
// types, so the core can be used and tested without them; the server
// translates the wire contract (proto/engram/v1/memory.proto) to these.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "storage/metric.h"

namespace engram {

// The tenant of every request while authentication is off.
inline constexpr char kDefaultTenant[] = "default";

inline constexpr float kDefaultBm25K1 = 1.2f;
inline constexpr float kDefaultBm25B = 0.75f;

// How a space's episode text is indexed and scored for lexical search
// (storage/lexical_index.h).
struct TextSettings {
  // A Snowball stemming language ("english", ...), or empty for none.
  std::string stem_language;
  // BM25 term-frequency saturation (>= 0) and length normalisation (0..1).
  float bm25_k1 = kDefaultBm25K1;
  float bm25_b = kDefaultBm25B;
  // Set by the server: the tokenizer scheme the space's postings were built
  // with (text/tokenizer.h, Tokenizer::version()).
  std::string tokenizer_version;

  bool operator==(const TextSettings&) const = default;
};

struct SpaceInfo {
  std::string name;
  uint32_t dimension = 0;
  Metric metric = Metric::kCosine;
  int64_t created_at_us = 0;
  uint64_t episode_count = 0;  // filled in on reads
  TextSettings text{};
  // The embedder that turns this space's texts into vectors: "" (none: the
  // caller sends vectors), "static" or "openai" (embed/embedder.h). Fixed at
  // creation; the engine checks it against the server's configuration.
  std::string embedder{};
};

using MetadataValue = std::variant<std::string, int64_t, double, bool>;

struct Episode {
  uint64_t id = 0;
  std::string agent_id;
  std::string session_id;
  std::string kind;
  std::string text;
  std::vector<float> embedding;
  std::map<std::string, MetadataValue> metadata;
  int64_t event_time_us = 0;
  int64_t expires_at_us = 0;  // 0: never
  float importance = 0;
  std::vector<uint64_t> links;
  uint64_t version = 0;
  int64_t created_at_us = 0;
  int64_t updated_at_us = 0;
  // Optional, chosen by the caller: unique within (space, agent_id). A
  // write whose key exists replaces that episode (same id, next version).
  // Fixed for the episode's life: not an UpdatableField.
  std::string key;

  bool operator==(const Episode&) const = default;
};

struct EpisodeWrite {
  std::string request_id;  // empty: not idempotent
  Episode episode;
};

struct PutResult {
  uint64_t id = 0;
  bool deduplicated = false;
  // The write's key named an existing episode, which it replaced.
  bool replaced = false;
};

// An episode as another store held it (moving an agent between shards):
// its current version and its older versions, oldest first, all with the
// id, version, key and timestamps they were given there.
struct ImportedEpisode {
  Episode current;
  std::vector<Episode> history;
};

struct ImportResult {
  uint64_t imported = 0;
  // Held already at the same or a later version: left as they are.
  uint64_t already_present = 0;
};

// Where an episode lives: its agent is part of the record's key, so a reader
// that knows it (the index does) reads the record with one lookup.
struct EpisodeRef {
  std::string agent_id;
  uint64_t id = 0;
};

// Fields of an episode that UpdateEpisode can replace.
enum class UpdatableField {
  kSessionId,
  kKind,
  kText,
  kEmbedding,
  kMetadata,
  kEventTime,
  kExpiresAt,
  kImportance,
  kLinks,
};

struct EpisodeUpdate {
  uint64_t id = 0;
  uint64_t expected_version = 0;  // 0: any version
  Episode values;
  std::vector<UpdatableField> fields;  // empty: all updatable fields
};

struct MetadataPredicate {
  enum class Op { kEq, kNe, kLt, kLe, kGt, kGe, kExists };
  std::string key;
  Op op = Op::kEq;
  std::optional<MetadataValue> value;
};

// Conditions an episode must all meet. Empty fields match everything.
struct EpisodeFilter {
  std::string agent_id;
  std::string session_id;  // requires agent_id
  std::vector<std::string> kinds;
  std::optional<int64_t> event_time_from_us;  // inclusive
  std::optional<int64_t> event_time_to_us;    // exclusive
  std::vector<MetadataPredicate> metadata;
};

// Bounds on what a client may store, and on the filters that select it. A
// request beyond any of them fails with INVALID_ARGUMENT naming the value
// and the limit.
struct StoreLimits {
  // Longest agent, session or request id or episode key, in bytes.
  // Default: 256.
  size_t max_id_bytes = 256;
  // Longest episode kind, in bytes. Default: 64.
  size_t max_kind_bytes = 64;
  // Longest episode text, in bytes. Default: 256 KiB.
  size_t max_text_bytes = 256 * 1024;
  // Most metadata per episode, in serialized bytes and in entries.
  // Defaults: 16 KiB, 64 entries.
  size_t max_metadata_bytes = 16 * 1024;
  size_t max_metadata_entries = 64;
  // Most links per episode. Default: 256.
  size_t max_links = 256;
  // Largest space dimension. Default: 4096.
  uint32_t max_dimension = 4096;
  // Most episodes per PutEpisodes batch. Default: 1024.
  size_t max_batch_size = 1024;
  // Most ids one DeleteEpisodes may name (by agent or session: no limit).
  // Default: 10000.
  size_t max_delete_ids = 10000;
};

struct DeleteTarget {
  std::vector<uint64_t> ids;  // used when agent_id is empty
  std::string agent_id;
  std::string session_id;         // with agent_id: only this session
  std::vector<std::string> keys;  // with agent_id: only these keys of the agent
};

struct HistoryPage {
  std::vector<Episode> versions;  // oldest first; the last page ends with the current one
  std::string next_page_token;    // empty on the last page
};

struct EpisodePage {
  std::vector<Episode> episodes;
  std::string next_page_token;  // empty on the last page
};

}  // namespace engram
