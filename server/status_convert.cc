#include "server/status_convert.h"

#include "absl/strings/str_cat.h"

namespace engram::server {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  std::string message(status.message());
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
