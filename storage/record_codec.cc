#include "storage/record_codec.h"

#include "absl/status/status.h"
#include "storage/records.pb.h"

namespace engram::storage {
namespace {

MetadataValueRecord ToRecord(const MetadataValue& value) {
  MetadataValueRecord record;
  std::visit(
      [&record](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) record.set_string_value(v);
        if constexpr (std::is_same_v<T, int64_t>) record.set_int_value(v);
        if constexpr (std::is_same_v<T, double>) record.set_double_value(v);
        if constexpr (std::is_same_v<T, bool>) record.set_bool_value(v);
      },
      value);
  return record;
}

absl::StatusOr<MetadataValue> FromRecord(const MetadataValueRecord& record) {
  switch (record.kind_case()) {
    case MetadataValueRecord::kStringValue:
      return MetadataValue(record.string_value());
    case MetadataValueRecord::kIntValue:
      return MetadataValue(record.int_value());
    case MetadataValueRecord::kDoubleValue:
      return MetadataValue(record.double_value());
    case MetadataValueRecord::kBoolValue:
      return MetadataValue(record.bool_value());
    case MetadataValueRecord::KIND_NOT_SET:
      break;
  }
  return absl::DataLossError("stored metadata value has no type");
}

}  // namespace

std::string EncodeEpisode(const Episode& e) {
  EpisodeRecord r;
  r.set_id(e.id);
  r.set_agent_id(e.agent_id);
  r.set_session_id(e.session_id);
  r.set_kind(e.kind);
  r.set_text(e.text);
  r.mutable_embedding()->Add(e.embedding.begin(), e.embedding.end());
  for (const auto& [key, value] : e.metadata) (*r.mutable_metadata())[key] = ToRecord(value);
  r.set_event_time_us(e.event_time_us);
  r.set_expires_at_us(e.expires_at_us);
  r.set_importance(e.importance);
  r.mutable_links()->Add(e.links.begin(), e.links.end());
  r.set_version(e.version);
  r.set_created_at_us(e.created_at_us);
  r.set_updated_at_us(e.updated_at_us);
  r.set_key(e.key);
  return r.SerializeAsString();
}

absl::StatusOr<Episode> DecodeEpisode(std::string_view bytes) {
  EpisodeRecord r;
  if (!r.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return absl::DataLossError("stored episode record does not parse");
  }
  Episode e;
  e.id = r.id();
  e.agent_id = r.agent_id();
  e.session_id = r.session_id();
  e.kind = r.kind();
  e.text = r.text();
  e.embedding.assign(r.embedding().begin(), r.embedding().end());
  for (const auto& [key, value] : r.metadata()) {
    absl::StatusOr<MetadataValue> v = FromRecord(value);
    if (!v.ok()) return v.status();
    e.metadata.emplace(key, *std::move(v));
  }
  e.event_time_us = r.event_time_us();
  e.expires_at_us = r.expires_at_us();
  e.importance = r.importance();
  e.links.assign(r.links().begin(), r.links().end());
  e.version = r.version();
  e.created_at_us = r.created_at_us();
  e.updated_at_us = r.updated_at_us();
  e.key = r.key();
  return e;
}

std::string EncodeSpace(const SpaceInfo& space) {
  SpaceRecord r;
  r.set_name(space.name);
  r.set_dimension(space.dimension);
  r.set_metric(static_cast<uint32_t>(space.metric));
  r.set_created_at_us(space.created_at_us);
  r.set_stem_language(space.text.stem_language);
  r.set_bm25_k1(space.text.bm25_k1);
  r.set_bm25_b(space.text.bm25_b);
  r.set_tokenizer_version(space.text.tokenizer_version);
  r.set_embedder(space.embedder);
  return r.SerializeAsString();
}

absl::StatusOr<SpaceInfo> DecodeSpace(std::string_view bytes) {
  SpaceRecord r;
  if (!r.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())) || r.metric() > 2) {
    return absl::DataLossError("stored space record does not parse");
  }
  SpaceInfo space;
  space.name = r.name();
  space.dimension = r.dimension();
  space.metric = static_cast<Metric>(r.metric());
  space.created_at_us = r.created_at_us();
  space.text.stem_language = r.stem_language();
  if (r.has_bm25_k1()) space.text.bm25_k1 = r.bm25_k1();
  if (r.has_bm25_b()) space.text.bm25_b = r.bm25_b();
  space.text.tokenizer_version = r.tokenizer_version();
  space.embedder = r.embedder();
  return space;
}

size_t MetadataBytes(const std::map<std::string, MetadataValue>& metadata) {
  size_t total = 0;
  for (const auto& [key, value] : metadata) total += key.size() + ToRecord(value).ByteSizeLong();
  return total;
}

}  // namespace engram::storage
