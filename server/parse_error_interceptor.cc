#include "server/parse_error_interceptor.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/stubs/logging.h>

#include <mutex>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"

namespace engram::server {
namespace {

// Protobuf's last complaint on this thread about a string field, e.g.
// "engram.v1.EpisodeFilter.agent_id"; cleared by the next POST_RECV_MESSAGE.
thread_local std::string utf8_field;

google::protobuf::LogHandler* previous_handler = nullptr;

void CatchUtf8Complaints(google::protobuf::LogLevel level, const char* filename, int line,
                         const std::string& message) {
  // "String field 'pkg.Message.field' contains invalid UTF-8 data when parsing ..."
  // The client hears about it in the call's status; the log is spared a
  // line per hostile request.
  if (message.find("invalid UTF-8") != std::string::npos) {
    const size_t open = message.find('\'');
    const size_t close = open == std::string::npos ? open : message.find('\'', open + 1);
    if (close != std::string::npos) {
      utf8_field = message.substr(open + 1, close - open - 1);
      return;
    }
  }
  if (previous_handler != nullptr) previous_handler(level, filename, line, message);
}

// "/engram.v1.MemoryService/Search" -> "engram.v1.SearchRequest"; "" when
// the method is not one the generated descriptors know.
std::string RequestTypeOf(absl::string_view method) {
  if (method.empty() || method.front() != '/') return "";
  const std::string dotted = absl::StrReplaceAll(method.substr(1), {{"/", "."}});
  const google::protobuf::MethodDescriptor* descriptor =
      google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(dotted);
  return descriptor == nullptr ? "" : descriptor->input_type()->full_name();
}

class ParseErrorInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit ParseErrorInterceptor(grpc::experimental::ServerRpcInfo* info) : info_(info) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      if (methods->GetRecvMessage() == nullptr &&
          info_->type() != grpc::experimental::ServerRpcInfo::Type::CLIENT_STREAMING) {
        parse_failed_ = true;
        field_ = utf8_field;
      }
      utf8_field.clear();
    }
    if (parse_failed_ &&
        methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED &&
          status.error_message().empty()) {
        std::string type = RequestTypeOf(info_->method());
        if (type.empty()) type = "message";
        std::string message = absl::StrCat("request is not a valid ", type, ": ");
        if (!field_.empty()) {
          absl::StrAppend(&message, "string field ", field_,
                          " holds invalid UTF-8 (string fields must be UTF-8)");
        } else {
          absl::StrAppend(&message, "its bytes do not parse as that message");
        }
        methods->ModifySendStatus(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message));
      }
    }
    methods->Proceed();
  }

 private:
  grpc::experimental::ServerRpcInfo* info_;
  bool parse_failed_ = false;
  std::string field_;
};

}  // namespace

ParseErrorInterceptorFactory::ParseErrorInterceptorFactory() {
  static std::once_flag installed;
  std::call_once(installed,
                 [] { previous_handler = google::protobuf::SetLogHandler(&CatchUtf8Complaints); });
}

grpc::experimental::Interceptor* ParseErrorInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  return new ParseErrorInterceptor(info);
}

}  // namespace engram::server
