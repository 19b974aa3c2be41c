#include "clients/cpp/engram_client.h"

#include <grpcpp/support/client_interceptor.h>

#include <algorithm>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/sharding.h"

namespace engram::client {

absl::Status FromGrpcStatus(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

namespace {

// Adds `authorization: Bearer <token>` to every call on the channel, so that
// callers of stubs() send it too. (gRPC's AccessTokenCredentials would need
// TLS; engramd accepts tokens on loopback plaintext as well.)
class BearerTokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(const std::string* header) : header_(header) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *header_});
    }
    methods->Proceed();
  }

 private:
  const std::string* header_;
};

class BearerTokenInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(std::string token)
      : header_(absl::StrCat("Bearer ", token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new BearerTokenInterceptor(&header_);
  }

 private:
  const std::string header_;  // outlives the channel's calls: the channel owns the factory
};

absl::Status ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read '", path, "'"));
  std::stringstream text;
  text << in.rdbuf();
  *out = text.str();
  return absl::OkStatus();
}

// The one agent a request is about ("" for several or none): sent as the
// x-engram-agent header (common/sharding.h) so proxies can route by agent.
std::string AgentOf(const v1::PutEpisodesRequest& request) {
  std::string agent;
  for (const v1::EpisodeWrite& write : request.episodes()) {
    if (agent.empty()) agent = write.episode().agent_id();
    if (write.episode().agent_id() != agent) return "";
  }
  return agent;
}
std::string AgentOf(const v1::GetEpisodeRequest& request) { return request.key().agent_id(); }
std::string AgentOf(const v1::UpdateEpisodeRequest& request) { return request.key().agent_id(); }
std::string AgentOf(const v1::GetHistoryRequest& request) { return request.key().agent_id(); }
std::string AgentOf(const v1::DeleteEpisodesRequest& request) {
  switch (request.target_case()) {
    case v1::DeleteEpisodesRequest::kAgentId:
      return request.agent_id();
    case v1::DeleteEpisodesRequest::kSession:
      return request.session().agent_id();
    case v1::DeleteEpisodesRequest::kKeys:
      return request.keys().agent_id();
    default:
      return "";
  }
}
std::string AgentOf(const v1::SearchRequest& request) { return request.filter().agent_id(); }
std::string AgentOf(const v1::ListEpisodesRequest& request) { return request.filter().agent_id(); }
std::string AgentOf(const v1::MatchPrefixRequest& request) { return request.agent_id(); }
std::string AgentOf(const v1::DeleteCacheRequest& request) { return request.agent_id(); }
std::string AgentOf(const google::protobuf::Message&) { return ""; }

void AddAgentHeader(const std::string& agent, grpc::ClientContext* context) {
  if (agent.empty()) return;
  std::string encoded = sharding::EncodeAgentHeader(agent);
  if (encoded.size() <= sharding::kMaxAgentHeaderBytes) {
    context->AddMetadata(sharding::kAgentHeader, encoded);
  }
}

}  // namespace

absl::Status ReadTlsFiles(const std::string& ca_file, const std::string& cert_file,
                          const std::string& key_file, ClientOptions* options) {
  options->tls = true;
  if (cert_file.empty() != key_file.empty()) {
    return absl::InvalidArgumentError("a client certificate and its key go together");
  }
  if (!ca_file.empty()) {
    if (absl::Status read = ReadFile(ca_file, &options->tls_ca_pem); !read.ok()) return read;
  }
  if (!cert_file.empty()) {
    if (absl::Status read = ReadFile(cert_file, &options->tls_cert_pem); !read.ok()) return read;
    if (absl::Status read = ReadFile(key_file, &options->tls_key_pem); !read.ok()) return read;
  }
  return absl::OkStatus();
}

Client::Client(const ClientOptions& options) : options_(options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (options.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls_ca_pem;
    ssl.pem_cert_chain = options.tls_cert_pem;
    ssl.pem_private_key = options.tls_key_pem;
    credentials = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) args.SetSslTargetNameOverride(options.tls_server_name);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!options.token.empty()) {
    interceptors.push_back(std::make_unique<BearerTokenInterceptorFactory>(options.token));
  }
  channel_ = grpc::experimental::CreateCustomChannelWithInterceptors(options.address, credentials,
                                                                     args, std::move(interceptors));
  memory_ = v1::MemoryService::NewStub(channel_);
  admin_ = v1::AdminService::NewStub(channel_);
  kv_ = v1::KVCacheService::NewStub(channel_);
  health_ = grpc::health::v1::Health::NewStub(channel_);
}

bool Client::WaitForConnected(absl::Duration timeout) {
  return channel_->WaitForConnected(absl::ToChronoTime(absl::Now() + timeout));
}

template <typename Stub, typename Request, typename Response>
absl::StatusOr<Response> Client::Call(Stub& stub,
                                      grpc::Status (Stub::*method)(grpc::ClientContext*,
                                                                   const Request&, Response*),
                                      const Request& request) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
  AddAgentHeader(AgentOf(request), &context);
  Response response;
  grpc::Status status = (stub.*method)(&context, request, &response);
  if (!status.ok()) {
    absl::Status error = FromGrpcStatus(status);
    // An overload refusal says when to retry (common/retry_after.h).
    const auto& trailers = context.GetServerTrailingMetadata();
    auto pushback = trailers.find(kRetryPushbackTrailer);
    int64_t ms = 0;
    if (pushback != trailers.end() &&
        absl::SimpleAtoi(absl::string_view(pushback->second.data(), pushback->second.size()),
                         &ms) &&
        ms >= 0) {
      error = WithRetryAfter(std::move(error), absl::Milliseconds(ms));
    }
    return error;
  }
  return response;
}

absl::Status Client::CheckHealth() {
  grpc::health::v1::HealthCheckRequest request;  // service "": the whole server
  auto response = Call(*health_, &grpc::health::v1::Health::Stub::Check, request);
  if (!response.ok()) return response.status();
  if (response->status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError("engramd is not SERVING");
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Space> Client::CreateSpace(const std::string& name, uint32_t dimension,
                                              v1::Metric metric) {
  v1::Space space;
  space.set_name(name);
  space.set_dimension(dimension);
  space.set_metric(metric);
  return CreateSpace(space);
}

absl::StatusOr<v1::Space> Client::CreateSpace(const v1::Space& space) {
  v1::CreateSpaceRequest request;
  *request.mutable_space() = space;
  auto response = Call(*memory_, &v1::MemoryService::Stub::CreateSpace, request);
  if (!response.ok()) return response.status();
  return response->space();
}

absl::StatusOr<v1::Space> Client::GetSpace(const std::string& name) {
  v1::GetSpaceRequest request;
  request.set_name(name);
  auto response = Call(*memory_, &v1::MemoryService::Stub::GetSpace, request);
  if (!response.ok()) return response.status();
  return response->space();
}

absl::StatusOr<v1::ListSpacesResponse> Client::ListSpaces() {
  return Call(*memory_, &v1::MemoryService::Stub::ListSpaces, v1::ListSpacesRequest());
}

absl::StatusOr<uint64_t> Client::DeleteSpace(const std::string& name) {
  v1::DeleteSpaceRequest request;
  request.set_name(name);
  auto response = Call(*memory_, &v1::MemoryService::Stub::DeleteSpace, request);
  if (!response.ok()) return response.status();
  return response->deleted_episodes();
}

absl::StatusOr<v1::PutEpisodesResponse> Client::PutEpisodes(
    const v1::PutEpisodesRequest& original) {
  v1::PutEpisodesRequest request = original;
  std::vector<bool> generated(request.episodes_size(), false);
  for (int i = 0; i < request.episodes_size(); ++i) {
    v1::EpisodeWrite* write = request.mutable_episodes(i);
    if (!write->request_id().empty()) continue;
    absl::BitGen random;
    write->set_request_id(absl::StrFormat("%016x%016x", absl::Uniform<uint64_t>(random),
                                          absl::Uniform<uint64_t>(random)));
    generated[i] = true;
  }
  absl::Duration backoff = absl::Milliseconds(100);
  absl::StatusOr<v1::PutEpisodesResponse> response;
  for (int attempt = 1; attempt <= std::max(1, options_.write_attempts); ++attempt) {
    if (attempt > 1) {
      absl::SleepFor(backoff);
      backoff *= 2;
    }
    response = Call(*memory_, &v1::MemoryService::Stub::PutEpisodes, request);
    if (response.ok()) break;
    if (std::optional<absl::Duration> retry_after = RetryAfter(response.status())) {
      // Refused for overload, nothing applied: wait as long as the server asked.
      backoff = std::max(backoff, *retry_after);
    } else if (response.status().code() != absl::StatusCode::kUnavailable) {
      break;
    }
  }
  if (!response.ok()) return response;
  for (int i = 0; i < response->deduplicated_size() && i < static_cast<int>(generated.size());
       ++i) {
    if (generated[i]) response->set_deduplicated(i, false);
  }
  return response;
}

absl::StatusOr<v1::Episode> Client::GetEpisode(const std::string& space, uint64_t id) {
  v1::GetEpisodeRequest request;
  request.set_space(space);
  request.set_id(id);
  auto response = Call(*memory_, &v1::MemoryService::Stub::GetEpisode, request);
  if (!response.ok()) return response.status();
  return response->episode();
}

absl::StatusOr<v1::Episode> Client::GetEpisodeByKey(const std::string& space,
                                                    const std::string& agent_id,
                                                    const std::string& key) {
  v1::GetEpisodeRequest request;
  request.set_space(space);
  request.mutable_key()->set_agent_id(agent_id);
  request.mutable_key()->set_key(key);
  auto response = Call(*memory_, &v1::MemoryService::Stub::GetEpisode, request);
  if (!response.ok()) return response.status();
  return response->episode();
}

absl::StatusOr<v1::Episode> Client::UpdateEpisode(const v1::UpdateEpisodeRequest& request) {
  auto response = Call(*memory_, &v1::MemoryService::Stub::UpdateEpisode, request);
  if (!response.ok()) return response.status();
  return response->episode();
}

absl::StatusOr<v1::GetHistoryResponse> Client::GetHistory(const std::string& space, uint64_t id,
                                                          uint32_t page_size,
                                                          const std::string& page_token) {
  v1::GetHistoryRequest request;
  request.set_space(space);
  request.set_id(id);
  request.set_page_size(page_size);
  request.set_page_token(page_token);
  return Call(*memory_, &v1::MemoryService::Stub::GetHistory, request);
}

absl::StatusOr<uint64_t> Client::DeleteEpisodes(const v1::DeleteEpisodesRequest& request) {
  auto response = Call(*memory_, &v1::MemoryService::Stub::DeleteEpisodes, request);
  if (!response.ok()) return response.status();
  return response->deleted();
}

absl::StatusOr<v1::ListEpisodesResponse> Client::ListEpisodes(
    const v1::ListEpisodesRequest& request) {
  return Call(*memory_, &v1::MemoryService::Stub::ListEpisodes, request);
}

absl::StatusOr<v1::ListAgentsResponse> Client::ListAgents(const v1::ListAgentsRequest& request) {
  return Call(*memory_, &v1::MemoryService::Stub::ListAgents, request);
}

absl::StatusOr<v1::SearchResponse> Client::Search(const v1::SearchRequest& request) {
  return Call(*memory_, &v1::MemoryService::Stub::Search, request);
}

absl::StatusOr<v1::AnalyzeTextResponse> Client::AnalyzeText(const std::string& space,
                                                            const std::string& text, bool embed) {
  v1::AnalyzeTextRequest request;
  request.set_space(space);
  request.set_text(text);
  request.set_embed(embed);
  return Call(*memory_, &v1::MemoryService::Stub::AnalyzeText, request);
}

absl::StatusOr<v1::StatsResponse> Client::Stats() {
  return Call(*admin_, &v1::AdminService::Stub::Stats, v1::StatsRequest());
}

absl::StatusOr<v1::ServerInfoResponse> Client::ServerInfo() {
  return Call(*admin_, &v1::AdminService::Stub::ServerInfo, v1::ServerInfoRequest());
}

absl::Status Client::Compact(const std::function<bool(const v1::CompactProgress&)>& progress) {
  grpc::ClientContext context;  // no deadline: compaction of a large store takes long
  std::unique_ptr<grpc::ClientReader<v1::CompactProgress>> reader =
      admin_->Compact(&context, v1::CompactRequest());
  v1::CompactProgress update;
  while (reader->Read(&update)) {
    if (!progress(update)) {
      context.TryCancel();
      break;
    }
  }
  return FromGrpcStatus(reader->Finish());
}

absl::Status Client::RebuildIndex(
    const std::string& space,
    const std::function<bool(const v1::RebuildIndexProgress&)>& progress) {
  grpc::ClientContext context;  // no deadline: a large space takes long to index
  v1::RebuildIndexRequest request;
  request.set_space(space);
  std::unique_ptr<grpc::ClientReader<v1::RebuildIndexProgress>> reader =
      admin_->RebuildIndex(&context, request);
  v1::RebuildIndexProgress update;
  while (reader->Read(&update)) {
    if (!progress(update)) {
      context.TryCancel();
      break;
    }
  }
  return FromGrpcStatus(reader->Finish());
}

absl::StatusOr<std::string> Client::Checkpoint(const std::string& name) {
  v1::CheckpointRequest request;
  request.set_name(name);
  auto response = Call(*admin_, &v1::AdminService::Stub::Checkpoint, request);
  if (!response.ok()) return response.status();
  return response->path();
}

absl::StatusOr<v1::BackupInfo> Client::Backup() {
  auto response = Call(*admin_, &v1::AdminService::Stub::Backup, v1::BackupRequest());
  if (!response.ok()) return response.status();
  return response->backup();
}

absl::StatusOr<v1::ListBackupsResponse> Client::ListBackups() {
  return Call(*admin_, &v1::AdminService::Stub::ListBackups, v1::ListBackupsRequest());
}

absl::StatusOr<std::string> Client::RestoreBackup(uint32_t backup_id, const std::string& name) {
  v1::RestoreBackupRequest request;
  request.set_backup_id(backup_id);
  request.set_name(name);
  auto response = Call(*admin_, &v1::AdminService::Stub::RestoreBackup, request);
  if (!response.ok()) return response.status();
  return response->path();
}

absl::StatusOr<v1::VerifyBackupResponse> Client::VerifyBackup(uint32_t backup_id) {
  v1::VerifyBackupRequest request;
  request.set_backup_id(backup_id);
  return Call(*admin_, &v1::AdminService::Stub::VerifyBackup, request);
}

absl::StatusOr<v1::SaveCacheResponse> Client::SaveCache(
    const v1::SaveCacheHeader& header, const std::function<bool(v1::KvBlock*)>& next_block) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
  AddAgentHeader(header.agent_id(), &context);
  v1::SaveCacheResponse response;
  std::unique_ptr<grpc::ClientWriter<v1::SaveCacheRequest>> writer =
      kv_->SaveCache(&context, &response);
  v1::SaveCacheRequest message;
  *message.mutable_header() = header;
  bool open = writer->Write(message);
  while (open) {
    message.Clear();
    if (!next_block(message.mutable_block())) break;
    open = writer->Write(message);
  }
  if (open) writer->WritesDone();
  grpc::Status status = writer->Finish();  // the server's reason when a write failed
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::Status Client::LoadCache(const v1::LoadCacheRequest& request,
                               const std::function<void(const v1::LoadCacheHeader&)>& on_header,
                               const std::function<bool(v1::KvBlock&)>& on_block) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + options_.timeout));
  AddAgentHeader(request.agent_id(), &context);
  std::unique_ptr<grpc::ClientReader<v1::LoadCacheResponse>> reader =
      kv_->LoadCache(&context, request);
  v1::LoadCacheResponse message;
  while (reader->Read(&message)) {
    if (message.has_header()) {
      on_header(message.header());
    } else if (!on_block(*message.mutable_block())) {
      context.TryCancel();
      break;
    }
  }
  return FromGrpcStatus(reader->Finish());
}

absl::StatusOr<v1::MatchPrefixResponse> Client::MatchPrefix(const v1::MatchPrefixRequest& request) {
  return Call(*kv_, &v1::KVCacheService::Stub::MatchPrefix, request);
}

absl::StatusOr<v1::ListCachesResponse> Client::ListCaches(const std::string& agent_id,
                                                          uint32_t page_size,
                                                          const std::string& page_token) {
  v1::ListCachesRequest request;
  request.set_agent_id(agent_id);
  request.set_page_size(page_size);
  request.set_page_token(page_token);
  return Call(*kv_, &v1::KVCacheService::Stub::ListCaches, request);
}

absl::StatusOr<v1::DeleteCacheResponse> Client::DeleteCache(const std::string& agent_id,
                                                            const std::string& model_id) {
  v1::DeleteCacheRequest request;
  request.set_agent_id(agent_id);
  request.set_model_id(model_id);
  return Call(*kv_, &v1::KVCacheService::Stub::DeleteCache, request);
}

absl::StatusOr<v1::KvStatsResponse> Client::KvStats() {
  return Call(*kv_, &v1::KVCacheService::Stub::Stats, v1::KvStatsRequest());
}

absl::StatusOr<v1::ExportCacheResponse> Client::ExportCache(const std::string& agent_id,
                                                            const std::string& model_id,
                                                            const std::string& path) {
  v1::ExportCacheRequest request;
  request.set_agent_id(agent_id);
  request.set_model_id(model_id);
  request.set_path(path);
  return Call(*kv_, &v1::KVCacheService::Stub::ExportCache, request);
}

absl::StatusOr<v1::ImportCacheResponse> Client::ImportCache(const std::string& path,
                                                            const std::string& agent_id) {
  v1::ImportCacheRequest request;
  request.set_path(path);
  request.set_agent_id(agent_id);
  return Call(*kv_, &v1::KVCacheService::Stub::ImportCache, request);
}

}  // namespace engram::client
