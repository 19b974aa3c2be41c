// A request whose bytes do not parse as its message (most often a string
// field holding invalid UTF-8, which proto3 refuses) never reaches a
// handler: gRPC 1.51's callback handlers answer such a call UNIMPLEMENTED
// with an empty message, and only the server log says why. This server
// interceptor turns that answer into INVALID_ARGUMENT naming the message
// and, when protobuf said which, the field:
//   "request is not a valid engram.v1.SearchRequest: string field
//    engram.v1.EpisodeFilter.agent_id holds invalid UTF-8"
//
// How it knows: the request is parsed on the thread that then runs the
// interceptors' POST_RECV_MESSAGE hook with a null message when the parse
// failed; protobuf's complaint about UTF-8 is logged on that thread during
// the parse and caught by a log handler (thread-local; the complaint goes to
// the client instead of the log, which a hostile client could otherwise
// flood a line per request). The status is
// rewritten at PRE_SEND_STATUS, only for that call and only when it is the
// empty UNIMPLEMENTED (engramd itself never answers UNIMPLEMENTED).
#pragma once

#include <grpcpp/support/server_interceptor.h>

namespace engram::server {

class ParseErrorInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // Installs the protobuf log handler (once per process; it passes every
  // message on to the handler it replaces).
  ParseErrorInterceptorFactory();
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;
};

}  // namespace engram::server
