#include "storage/kvcache/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/str_cat.h"

namespace engram::kvcache {
namespace {

struct DtypeEntry {
  TensorDtype dtype;
  std::string_view name;
  size_t bytes;
};
constexpr DtypeEntry kDtypes[] = {
    {TensorDtype::kU32, "U32", 4},   {TensorDtype::kF16, "F16", 2}, {TensorDtype::kBF16, "BF16", 2},
    {TensorDtype::kF32, "F32", 4},   {TensorDtype::kU8, "U8", 1},   {TensorDtype::kI32, "I32", 4},
    {TensorDtype::kI64, "I64", 8},   {TensorDtype::kU64, "U64", 8}, {TensorDtype::kF64, "F64", 8},
    {TensorDtype::kBool, "BOOL", 1}, {TensorDtype::kI8, "I8", 1},   {TensorDtype::kU16, "U16", 2},
    {TensorDtype::kI16, "I16", 2}};

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("safetensors: ", what));
}

absl::StatusOr<uint64_t> ReadUint(const nlohmann::json& value, absl::string_view what) {
  if (!value.is_number_unsigned())
    return Invalid(absl::StrCat(what, " must be an unsigned integer"));
  return value.get<uint64_t>();
}

bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

absl::Status ErrnoError(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

}  // namespace

std::string_view TensorDtypeName(TensorDtype dtype) {
  for (const DtypeEntry& entry : kDtypes) {
    if (entry.dtype == dtype) return entry.name;
  }
  return "?";
}

size_t TensorDtypeBytes(TensorDtype dtype) {
  for (const DtypeEntry& entry : kDtypes) {
    if (entry.dtype == dtype) return entry.bytes;
  }
  return 1;
}

const TensorInfo* SafetensorsHeader::Find(std::string_view name) const {
  for (const TensorInfo& tensor : tensors) {
    if (tensor.name == name) return &tensor;
  }
  return nullptr;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(std::string_view prefix,
                                                         uint64_t file_size) {
  if (prefix.size() < 8 || file_size < 8) return Invalid("file is shorter than 8 bytes");
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) {
    header_size |= static_cast<uint64_t>(static_cast<uint8_t>(prefix[i])) << (8 * i);
  }
  if (header_size > kMaxSafetensorsHeaderBytes) {
    return Invalid(absl::StrCat("header of ", header_size, " bytes exceeds the limit of ",
                                kMaxSafetensorsHeaderBytes));
  }
  if (header_size < 2 || 8 + header_size > file_size) {
    return Invalid(absl::StrCat("header of ", header_size, " bytes does not fit a file of ",
                                file_size, " bytes"));
  }
  if (prefix.size() < 8 + header_size) return Invalid("header is truncated");
  std::string_view text = prefix.substr(8, header_size);
  if (text.front() != '{') return Invalid("header must be a JSON object starting with '{'");

  // Reject duplicate top-level names (nlohmann would keep the last one).
  std::set<std::string> names;
  bool duplicate = false;
  std::string duplicate_name;
  nlohmann::json::parser_callback_t on_event = [&](int depth, nlohmann::json::parse_event_t event,
                                                   nlohmann::json& parsed) {
    if (depth == 1 && event == nlohmann::json::parse_event_t::key && parsed.is_string()) {
      if (!names.insert(parsed.get<std::string>()).second && !duplicate) {
        duplicate = true;
        duplicate_name = parsed.get<std::string>();
      }
    }
    return true;
  };
  nlohmann::json header = nlohmann::json::parse(text.begin(), text.end(), on_event,
                                                /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) return Invalid("header is not a JSON object");
  if (duplicate) return Invalid(absl::StrCat("tensor '", duplicate_name, "' appears twice"));

  SafetensorsHeader result;
  result.data_start = 8 + header_size;
  const uint64_t data_size = file_size - result.data_start;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return Invalid("__metadata__ must be an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) {
          return Invalid(absl::StrCat("metadata value of '", key, "' must be a string"));
        }
        result.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object()) return Invalid(absl::StrCat("tensor '", name, "' must be an object"));
    TensorInfo tensor;
    tensor.name = name;
    auto dtype = entry.find("dtype");
    if (dtype == entry.end() || !dtype->is_string()) {
      return Invalid(absl::StrCat("tensor '", name, "' has no dtype"));
    }
    std::string dtype_name = dtype->get<std::string>();
    const DtypeEntry* known = nullptr;
    for (const DtypeEntry& candidate : kDtypes) {
      if (candidate.name == dtype_name) known = &candidate;
    }
    if (known == nullptr) {
      return Invalid(absl::StrCat("tensor '", name, "' has unsupported dtype '", dtype_name, "'"));
    }
    tensor.dtype = known->dtype;
    auto shape = entry.find("shape");
    if (shape == entry.end() || !shape->is_array() || shape->size() > 16) {
      return Invalid(absl::StrCat("tensor '", name, "' needs a shape of at most 16 dimensions"));
    }
    uint64_t elements = 1;
    for (const nlohmann::json& dim : *shape) {
      absl::StatusOr<uint64_t> value = ReadUint(dim, absl::StrCat("tensor '", name, "' shape"));
      if (!value.ok()) return value.status();
      tensor.shape.push_back(*value);
      if (MulOverflows(elements, *value, &elements)) {
        return Invalid(absl::StrCat("tensor '", name, "' shape overflows"));
      }
    }
    uint64_t bytes = 0;
    if (MulOverflows(elements, known->bytes, &bytes)) {
      return Invalid(absl::StrCat("tensor '", name, "' size overflows"));
    }
    auto offsets = entry.find("data_offsets");
    if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2) {
      return Invalid(absl::StrCat("tensor '", name, "' needs data_offsets [begin, end]"));
    }
    absl::StatusOr<uint64_t> begin = ReadUint((*offsets)[0], "data_offsets");
    absl::StatusOr<uint64_t> end = ReadUint((*offsets)[1], "data_offsets");
    if (!begin.ok()) return begin.status();
    if (!end.ok()) return end.status();
    if (*begin > *end || *end > data_size) {
      return Invalid(absl::StrCat("tensor '", name, "' data_offsets [", *begin, ", ", *end,
                                  "] are outside the ", data_size, " data bytes"));
    }
    if (*end - *begin != bytes) {
      return Invalid(absl::StrCat("tensor '", name, "' has ", *end - *begin,
                                  " bytes but its shape and dtype need ", bytes));
    }
    tensor.begin = *begin;
    tensor.end = *end;
    result.tensors.push_back(std::move(tensor));
  }
  std::sort(result.tensors.begin(), result.tensors.end(),
            [](const TensorInfo& a, const TensorInfo& b) {
              return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
            });
  uint64_t expected_begin = 0;
  for (const TensorInfo& tensor : result.tensors) {
    if (tensor.begin != expected_begin) {
      return Invalid(absl::StrCat("tensor '", tensor.name, "' starts at ", tensor.begin,
                                  " but the previous data ends at ", expected_begin,
                                  " (offsets must be contiguous and not overlap)"));
    }
    expected_begin = tensor.end;
  }
  if (expected_begin != data_size) {
    return Invalid(
        absl::StrCat("tensors cover ", expected_begin, " of the ", data_size, " data bytes"));
  }
  return result;
}

absl::StatusOr<SafetensorsReader> SafetensorsReader::Open(int fd) {
  struct stat info;
  if (fstat(fd, &info) != 0) {
    absl::Status error = ErrnoError("safetensors: stat");
    ::close(fd);
    return error;
  }
  if (!S_ISREG(info.st_mode)) {
    ::close(fd);
    return Invalid("not a regular file");
  }
  uint64_t file_size = static_cast<uint64_t>(info.st_size);
  std::string prefix(std::min<uint64_t>(file_size, 8), '\0');
  if (::pread(fd, prefix.data(), prefix.size(), 0) != static_cast<ssize_t>(prefix.size())) {
    ::close(fd);
    return Invalid("file is shorter than 8 bytes");
  }
  uint64_t header_size = 0;
  for (int i = 0; i < 8 && i < static_cast<int>(prefix.size()); ++i) {
    header_size |= static_cast<uint64_t>(static_cast<uint8_t>(prefix[i])) << (8 * i);
  }
  if (prefix.size() == 8 && header_size <= kMaxSafetensorsHeaderBytes &&
      8 + header_size <= file_size) {
    prefix.resize(8 + header_size);
    if (::pread(fd, prefix.data() + 8, header_size, 8) != static_cast<ssize_t>(header_size)) {
      ::close(fd);
      return Invalid("header is truncated");
    }
  }
  absl::StatusOr<SafetensorsHeader> header = ParseSafetensorsHeader(prefix, file_size);
  if (!header.ok()) {
    ::close(fd);
    return header.status();
  }
  return SafetensorsReader(fd, *std::move(header));
}

SafetensorsReader::SafetensorsReader(SafetensorsReader&& other) noexcept
    : fd_(other.fd_), header_(std::move(other.header_)) {
  other.fd_ = -1;
}

SafetensorsReader::~SafetensorsReader() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<std::string> SafetensorsReader::Read(const TensorInfo& tensor) const {
  std::string bytes(tensor.end - tensor.begin, '\0');
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::pread(fd_, bytes.data() + done, bytes.size() - done,
                        static_cast<off_t>(header_.data_start + tensor.begin + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return absl::DataLossError(absl::StrCat("safetensors: reading '", tensor.name, "' failed"));
    done += static_cast<size_t>(n);
  }
  return bytes;
}

uint64_t TensorLayout::Bytes() const {
  uint64_t bytes = TensorDtypeBytes(dtype);
  for (uint64_t extent : shape) bytes *= extent;
  return bytes;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorLayout>& tensors,
                              const std::map<std::string, std::string>& metadata,
                              const TensorSource& source, fileio::FileSystem* fs) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorLayout& tensor : tensors) {
    header[tensor.name] = {{"dtype", TensorDtypeName(tensor.dtype)},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + tensor.Bytes()}}};
    offset += tensor.Bytes();
  }
  std::string text = header.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  text.append((8 - (text.size() % 8)) % 8, ' ');
  std::string length(8, '\0');
  for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((text.size() >> (8 * i)) & 0xFF);

  absl::StatusOr<std::unique_ptr<fileio::AtomicFileWriter>> file =
      fileio::AtomicFileWriter::Create(path, 0644, fs);
  if (!file.ok()) return file.status();
  if (absl::Status written = (*file)->Append(length); !written.ok()) return written;
  if (absl::Status written = (*file)->Append(text); !written.ok()) return written;
  for (size_t i = 0; i < tensors.size(); ++i) {
    absl::StatusOr<std::string_view> data = source(i);
    if (!data.ok()) return data.status();
    if (data->size() != tensors[i].Bytes()) {
      return absl::InternalError(absl::StrCat("tensor ", tensors[i].name, " has ", data->size(),
                                              " bytes; its shape needs ", tensors[i].Bytes()));
    }
    if (absl::Status written = (*file)->Append(*data); !written.ok()) return written;
  }
  return (*file)->Commit();
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<TensorLayout> layouts;
  layouts.reserve(tensors.size());
  for (const TensorToWrite& tensor : tensors) {
    layouts.push_back({tensor.name, tensor.dtype, tensor.shape});
  }
  return WriteSafetensors(
      path, layouts, metadata,
      [&tensors](size_t index) -> absl::StatusOr<std::string_view> { return tensors[index].data; });
}

}  // namespace engram::kvcache
