// Conversion between the domain types (storage/episode.h) and their on-disk
// records (storage/records.proto).
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "storage/episode.h"

namespace engram::storage {

std::string EncodeEpisode(const Episode& episode);
// DATA_LOSS when the bytes are not a valid record.
absl::StatusOr<Episode> DecodeEpisode(std::string_view bytes);

std::string EncodeSpace(const SpaceInfo& space);
absl::StatusOr<SpaceInfo> DecodeSpace(std::string_view bytes);

// Serialized size of the metadata map, as the limit on metadata bytes counts it.
size_t MetadataBytes(const std::map<std::string, MetadataValue>& metadata);

}  // namespace engram::storage
