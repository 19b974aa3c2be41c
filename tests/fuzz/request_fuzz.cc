// In-process request fuzzing: engramd's whole request path (gRPC's parsing,
// the parse-error interceptor, authentication, tenant limits, validation,
// the engine and the stores) on arbitrary bytes, through
// EngramServer::InProcessChannel.
//
// Input: byte 0 picks the call (kCalls below), the rest is its request as
// protobuf bytes, sent as they are so that engramd does the parsing.
// SaveCache takes the rest as a stream: messages prefixed by a 2-byte
// little-endian length.
//
// Every answer must be deliberate: OK or a status engramd documents for
// bad input. INTERNAL, UNKNOWN, DATA_LOSS or UNIMPLEMENTED, or a message
// longer than the 1 KiB cap allows, aborts (a finding). Every 512 calls the
// server must still answer its health check, and the fuzzed tenant's data is
// reset so that memory stays bounded over millions of runs.
#include <google/protobuf/descriptor.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <memory>
#include <string>

#include "engram/v1/admin.grpc.pb.h"
#include "engram/v1/kvcache.grpc.pb.h"
#include "engram/v1/memory.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "server/auth/tokens.h"
#include "server/engram_server.h"
#include "server/status_convert.h"

namespace {

using engram::server::EngramServer;
namespace v1 = engram::v1;

// Unary calls sent as raw bytes (the server parses them).
constexpr const char* kCalls[] = {
    "/engram.v1.MemoryService/PutEpisodes",    "/engram.v1.MemoryService/Search",
    "/engram.v1.MemoryService/ListEpisodes",   "/engram.v1.MemoryService/UpdateEpisode",
    "/engram.v1.MemoryService/DeleteEpisodes", "/engram.v1.MemoryService/GetHistory",
    "/engram.v1.MemoryService/GetEpisode",     "/engram.v1.MemoryService/AnalyzeText",
    "/engram.v1.MemoryService/CreateSpace",    "/engram.v1.MemoryService/GetSpace",
    "/engram.v1.KVCacheService/MatchPrefix",   "/engram.v1.KVCacheService/ListCaches",
    "/engram.v1.KVCacheService/DeleteCache",   "/engram.v1.KVCacheService/ExportCache",
    "/engram.v1.KVCacheService/ImportCache",   "/engram.v1.AdminService/Stats",
    "/engram.v1.AdminService/Checkpoint",      "/engram.v1.MemoryService/ListAgents",
    "/engram.v1.AdminService/ServerInfo",      "/engram.v1.MemoryService/ImportEpisodes",
};
constexpr size_t kUnaryCalls = sizeof(kCalls) / sizeof(kCalls[0]);
// Byte 0 values past the unary calls.
constexpr size_t kSaveCache = kUnaryCalls;
constexpr size_t kLoadCache = kUnaryCalls + 1;
constexpr size_t kCallKinds = kUnaryCalls + 2;

struct Fixture {
  std::string dir;
  std::string token;
  std::unique_ptr<EngramServer> server;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<grpc::GenericStub> generic;
  std::unique_ptr<v1::MemoryService::Stub> memory;
  std::unique_ptr<v1::KVCacheService::Stub> kv;
  std::unique_ptr<grpc::health::v1::Health::Stub> health;
  uint64_t calls = 0;

  void Authorize(grpc::ClientContext* context) const {
    context->AddMetadata("authorization", "Bearer " + token);
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  }
};

[[noreturn]] void Finding(const std::string& what, const grpc::Status& status) {
  std::fprintf(stderr, "request_fuzz: %s answered %d \"%s\"\n", what.c_str(),
               static_cast<int>(status.error_code()), status.error_message().c_str());
  std::abort();
}

void Check(const std::string& what, const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::INTERNAL:
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::DATA_LOSS:
    case grpc::StatusCode::UNIMPLEMENTED:
      Finding(what, status);
    default:
      break;
  }
  // The cap plus the note saying how much was cut.
  if (status.error_message().size() > engram::server::kMaxStatusMessageBytes + 64) {
    Finding(what + " (message too long)", status);
  }
}

void CreateSpaces(Fixture& f) {
  struct Space {
    const char* name;
    uint32_t dimension;
    v1::Metric metric;
  };
  for (const Space& s : {Space{"s", 8, v1::METRIC_L2}, Space{"c", 8, v1::METRIC_COSINE},
                         Space{"t", 3, v1::METRIC_INNER_PRODUCT}}) {
    grpc::ClientContext context;
    f.Authorize(&context);
    v1::CreateSpaceRequest request;
    request.mutable_space()->set_name(s.name);
    request.mutable_space()->set_dimension(s.dimension);
    request.mutable_space()->set_metric(s.metric);
    if (std::string(s.name) == "t")
      request.mutable_space()->mutable_text()->set_stem_language("english");
    v1::CreateSpaceResponse response;
    f.memory->CreateSpace(&context, request, &response);
    v1::PutEpisodesRequest put;
    put.set_space(s.name);
    for (int i = 0; i < 16; ++i) {
      v1::Episode* episode = put.add_episodes()->mutable_episode();
      episode->set_agent_id(i % 2 ? "alice" : "bob");
      episode->set_session_id(i % 3 ? "s1" : "s2");
      episode->set_text("seed episode number " + std::to_string(i) + " about tea and trains");
      for (uint32_t d = 0; d < s.dimension; ++d)
        episode->add_embedding(float((i * 7 + d) % 11) - 5.0f);
    }
    grpc::ClientContext put_context;
    f.Authorize(&put_context);
    v1::PutEpisodesResponse put_response;
    Check("seeding", f.memory->PutEpisodes(&put_context, put, &put_response));
  }
}

// Deletes what the fuzzed calls wrote (every space, the seeded ones and
// those fuzzed CreateSpace calls made, and KV caches) and seeds again.
void Reset(Fixture& f) {
  grpc::ClientContext list_context;
  f.Authorize(&list_context);
  v1::ListSpacesResponse spaces;
  f.memory->ListSpaces(&list_context, v1::ListSpacesRequest(), &spaces);
  for (const v1::Space& space : spaces.spaces()) {
    grpc::ClientContext context;
    f.Authorize(&context);
    v1::DeleteSpaceRequest request;
    request.set_name(space.name());
    v1::DeleteSpaceResponse response;
    f.memory->DeleteSpace(&context, request, &response);
  }
  for (const char* agent : {"alice", "bob"}) {
    grpc::ClientContext context;
    f.Authorize(&context);
    v1::DeleteCacheRequest request;
    request.set_agent_id(agent);
    v1::DeleteCacheResponse response;
    f.kv->DeleteCache(&context, request, &response);
  }
  CreateSpaces(f);
}

Fixture& TheFixture() {
  static Fixture* fixture = [] {
    spdlog::set_level(spdlog::level::off);
    auto* f = new Fixture();
    char pattern[] = "/tmp/engram-request-fuzz-XXXXXX";
    f->dir = mkdtemp(pattern);
    // libFuzzer's fork mode starts a process per job: each must leave no
    // database behind, or a long run fills the disk.
    static std::string dir_to_remove = f->dir;
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(dir_to_remove, ignored);
    });
    engram::auth::TokensFile tokens;
    engram::auth::NewToken token =
        *engram::auth::CreateToken("fuzz", engram::auth::Role::kAdmin, "request_fuzz", 0);
    tokens.tokens.push_back(token.record);
    f->token = token.token;
    const std::string tokens_path = f->dir + "/tokens";
    if (!engram::auth::SaveTokensFile(tokens_path, tokens).ok()) std::abort();
    engram::server::ServerConfig config;
    config.listen_address = "127.0.0.1:0";
    config.metrics_address = "";
    config.store.data_dir = f->dir + "/data";
    config.store.sync_writes = false;
    config.store.min_free_disk_mb = 0;
    config.store.disk_reserve_mb = 0;
    config.checkpoint_dir = f->dir + "/checkpoints";
    config.backup_dir = f->dir + "/backups";
    config.restore_dir = f->dir + "/restores";
    config.kv.export_dir = f->dir + "/kv";
    config.kv.max_tokens = 4096;
    config.kv.pool_mb = 64;
    config.auth.tokens_file = tokens_path;
    config.tenant_limits.max_episodes = 20000;
    config.tenant_limits.max_kv_mb = 64;
    config.gpu.enabled = false;
    config.gpu.budget_mb = 64;
    config.worker_threads = 2;
    config.read_threads = 2;
    absl::StatusOr<std::unique_ptr<EngramServer>> server = EngramServer::Start(config);
    if (!server.ok()) {
      std::fprintf(stderr, "request_fuzz: engramd did not start: %s\n",
                   server.status().ToString().c_str());
      std::abort();
    }
    f->server = *std::move(server);
    f->channel = f->server->InProcessChannel();
    f->generic = std::make_unique<grpc::GenericStub>(f->channel);
    f->memory = v1::MemoryService::NewStub(f->channel);
    f->kv = v1::KVCacheService::NewStub(f->channel);
    f->health = grpc::health::v1::Health::NewStub(f->channel);
    CreateSpaces(*f);
    return f;
  }();
  return *fixture;
}

grpc::Status RawUnary(Fixture& f, const std::string& method, const uint8_t* data, size_t size) {
  grpc::Slice slice(data, size);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::ClientContext context;
  f.Authorize(&context);
  std::promise<grpc::Status> done;
  f.generic->UnaryCall(&context, method, grpc::StubOptions(), &request, &response,
                       [&done](grpc::Status status) { done.set_value(std::move(status)); });
  return done.get_future().get();
}

grpc::Status SaveCache(Fixture& f, const uint8_t* data, size_t size) {
  grpc::ClientContext context;
  f.Authorize(&context);
  v1::SaveCacheResponse response;
  std::unique_ptr<grpc::ClientWriter<v1::SaveCacheRequest>> writer =
      f.kv->SaveCache(&context, &response);
  size_t at = 0;
  while (at + 2 <= size) {
    const size_t length = std::min<size_t>(data[at] | (size_t{data[at + 1]} << 8), size - at - 2);
    v1::SaveCacheRequest message;
    // Messages that do not parse here are skipped: the stream's own parse
    // failures are the raw calls' business.
    if (message.ParseFromArray(data + at + 2, static_cast<int>(length))) {
      if (!writer->Write(message)) break;
    }
    at += 2 + length;
  }
  writer->WritesDone();
  return writer->Finish();
}

grpc::Status LoadCache(Fixture& f, const uint8_t* data, size_t size) {
  v1::LoadCacheRequest request;
  if (!request.ParseFromArray(data, static_cast<int>(size))) return grpc::Status::OK;
  grpc::ClientContext context;
  f.Authorize(&context);
  std::unique_ptr<grpc::ClientReader<v1::LoadCacheResponse>> reader =
      f.kv->LoadCache(&context, request);
  v1::LoadCacheResponse message;
  while (reader->Read(&message)) {
  }
  return reader->Finish();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Fixture& f = TheFixture();
  const size_t kind = data[0] % kCallKinds;
  ++data;
  --size;
  if (kind < kUnaryCalls) {
    Check(kCalls[kind], RawUnary(f, kCalls[kind], data, size));
  } else if (kind == kSaveCache) {
    Check("SaveCache", SaveCache(f, data, size));
  } else {
    Check("LoadCache", LoadCache(f, data, size));
  }
  if (++f.calls % 512 == 0) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    grpc::Status status = f.health->Check(&context, request, &response);
    if (!status.ok() || response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
      Finding("the health check", status);
    }
    Reset(f);
  }
  return 0;
}
