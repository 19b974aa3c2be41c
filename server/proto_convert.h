// Translation between the wire contract (engram.v1 protos) and the domain
// types of storage/episode.h and retrieval/search.h. Malformed wire values (an unset oneof, an
// unknown enum or update-mask path) are INVALID_ARGUMENT naming the field.
#pragma once

#include "absl/status/statusor.h"
#include "engram/v1/memory.pb.h"
#include "retrieval/search.h"
#include "storage/episode.h"

namespace engram::server {

absl::StatusOr<Metric> MetricFromProto(v1::Metric metric);
v1::Metric MetricToProto(Metric metric);

void SpaceToProto(const SpaceInfo& space, v1::Space* out);
// The client's text settings; the tokenizer version is the server's to set.
TextSettings TextSettingsFromProto(const v1::TextIndex& text);

absl::StatusOr<Episode> EpisodeFromProto(const v1::Episode& episode);
void EpisodeToProto(const Episode& episode, bool include_embedding, v1::Episode* out);

// Hits, route, candidates and stages.
void SearchResultToProto(const retrieval::SearchResult& result, bool include_embedding,
                         v1::SearchResponse* out);

absl::StatusOr<EpisodeFilter> FilterFromProto(const v1::EpisodeFilter& filter);

absl::StatusOr<std::vector<UpdatableField>> UpdateMaskFromProto(
    const google::protobuf::RepeatedPtrField<std::string>& paths);

}  // namespace engram::server
