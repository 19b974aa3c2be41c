#include "server/status_convert.h"

#include <algorithm>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace engram::server {
namespace {

absl::Mutex scrub_mutex;
std::vector<ScrubbedPath>* scrubbed_paths ABSL_GUARDED_BY(scrub_mutex) = nullptr;

void Scrub(std::string& message) {
  absl::MutexLock lock(&scrub_mutex);
  if (scrubbed_paths == nullptr) return;
  for (const ScrubbedPath& path : *scrubbed_paths) {
    size_t at = message.find(path.absolute);
    while (at != std::string::npos) {
      // Whole path components only: "/data" is not scrubbed from "/database".
      const size_t end = at + path.absolute.size();
      const bool whole = end == message.size() || message[end] == '/' || message[end] == '\'' ||
                         message[end] == '"' || message[end] == ' ' || message[end] == ':' ||
                         message[end] == ',' || message[end] == ')';
      if (whole) {
        message.replace(at, path.absolute.size(), path.shown);
        at = message.find(path.absolute, at + path.shown.size());
      } else {
        at = message.find(path.absolute, end);
      }
    }
  }
}

}  // namespace

void SetScrubbedPaths(std::vector<ScrubbedPath> paths) {
  // Longest first, so that a directory inside another is named by its own key.
  std::sort(paths.begin(), paths.end(), [](const ScrubbedPath& a, const ScrubbedPath& b) {
    return a.absolute.size() > b.absolute.size();
  });
  paths.erase(std::remove_if(paths.begin(), paths.end(),
                             [](const ScrubbedPath& p) { return p.absolute.size() <= 1; }),
              paths.end());
  absl::MutexLock lock(&scrub_mutex);
  delete scrubbed_paths;
  scrubbed_paths = new std::vector<ScrubbedPath>(std::move(paths));
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  std::string message(status.message());
  if (!status.ok()) Scrub(message);
  if (message.size() > kMaxStatusMessageBytes) {
    // Cut at a UTF-8 character boundary: continuation bytes are 10xxxxxx.
    size_t cut = kMaxStatusMessageBytes;
    while (cut > 0 && (static_cast<unsigned char>(message[cut]) & 0xC0) == 0x80) --cut;
    message = absl::StrCat(message.substr(0, cut), "... (", message.size() - cut,
                           " more bytes of this message cut)");
  }
  // absl::StatusCode and grpc::StatusCode share their numeric values.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), message);
}

}  // namespace engram::server
