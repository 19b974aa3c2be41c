#include "clients/cpp/engram_client.h"

#include "absl/strings/str_cat.h"

namespace engram::client {

absl::Status FromGrpcStatus(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

Client::Client(const ClientOptions& options) : options_(options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  channel_ = grpc::CreateCustomChannel(options.address, grpc::InsecureChannelCredentials(), args);
  memory_ = v1::MemoryService::NewStub(channel_);
  admin_ = v1::AdminService::NewStub(channel_);
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
  Response response;
  grpc::Status status = (stub.*method)(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
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
  v1::CreateSpaceRequest request;
  request.mutable_space()->set_name(name);
  request.mutable_space()->set_dimension(dimension);
  request.mutable_space()->set_metric(metric);
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

absl::StatusOr<v1::PutEpisodesResponse> Client::PutEpisodes(const v1::PutEpisodesRequest& request) {
  return Call(*memory_, &v1::MemoryService::Stub::PutEpisodes, request);
}

absl::StatusOr<v1::Episode> Client::GetEpisode(const std::string& space, uint64_t id) {
  v1::GetEpisodeRequest request;
  request.set_space(space);
  request.set_id(id);
  auto response = Call(*memory_, &v1::MemoryService::Stub::GetEpisode, request);
  if (!response.ok()) return response.status();
  return response->episode();
}

absl::StatusOr<v1::Episode> Client::UpdateEpisode(const v1::UpdateEpisodeRequest& request) {
  auto response = Call(*memory_, &v1::MemoryService::Stub::UpdateEpisode, request);
  if (!response.ok()) return response.status();
  return response->episode();
}

absl::StatusOr<v1::GetHistoryResponse> Client::GetHistory(const std::string& space, uint64_t id) {
  v1::GetHistoryRequest request;
  request.set_space(space);
  request.set_id(id);
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

absl::StatusOr<v1::SearchResponse> Client::Search(const v1::SearchRequest& request) {
  return Call(*memory_, &v1::MemoryService::Stub::Search, request);
}

absl::StatusOr<v1::StatsResponse> Client::Stats() {
  return Call(*admin_, &v1::AdminService::Stub::Stats, v1::StatsRequest());
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

}  // namespace engram::client
