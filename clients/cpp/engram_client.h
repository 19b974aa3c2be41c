// The C++ client library of Engram: a thin, synchronous wrapper over the
// generated stubs that returns absl::Status(Or) instead of grpc::Status and
// applies a per-call timeout. Used by engramctl, the integration tests and
// the benchmarks (which also use stubs() for the asynchronous API).
//
// Thread-safe: one Client may be shared by many threads.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/retry_after.h"
#include "engram/v1/admin.grpc.pb.h"
#include "engram/v1/kvcache.grpc.pb.h"
#include "engram/v1/memory.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace engram::client {

struct ClientOptions {
  // host:port of engramd. Default: 127.0.0.1:50051.
  std::string address = "127.0.0.1:50051";
  // Deadline of each call. Default: 30 s.
  absl::Duration timeout = absl::Seconds(30);
  // Largest message received. Default: 64 MiB (the server's default limit).
  int max_message_bytes = 64 << 20;
  // Attempts of a PutEpisodes that finds engramd unreachable (UNAVAILABLE)
  // or is refused for overload (RESOURCE_EXHAUSTED with a retry delay,
  // common/retry_after.h; not a full disk or a tenant limit), 100 ms apart
  // and doubling, or after the delay the server asked for if longer. Every
  // episode gets a request_id first, so a retry never stores a batch twice.
  // 1: no retry. Default: 3.
  int write_attempts = 3;
  // Bearer token sent with every call (`engramctl token create`); "": none.
  // Default: "".
  std::string token;
  // TLS: verify engramd against `tls_ca_pem` (empty: the system's roots)
  // and, for mTLS, present `tls_cert_pem` and `tls_key_pem`.
  // ReadTlsFiles() fills them from files. Default: plaintext.
  bool tls = false;
  std::string tls_ca_pem;
  std::string tls_cert_pem;
  std::string tls_key_pem;
  // The name the server's certificate must carry, when it differs from the
  // address's host (e.g. connecting by IP). Default: "" (the host).
  std::string tls_server_name;
};

// Sets `options->tls` and reads the PEM files named (empty: not used).
// NOT_FOUND names a file that cannot be read.
absl::Status ReadTlsFiles(const std::string& ca_file, const std::string& cert_file,
                          const std::string& key_file, ClientOptions* options);

class Client {
 public:
  explicit Client(const ClientOptions& options = ClientOptions());

  // True once the channel is connected, false when `timeout` passes first.
  bool WaitForConnected(absl::Duration timeout);
  // SERVING status from the standard health service.
  absl::Status CheckHealth();

  absl::StatusOr<v1::Space> CreateSpace(const std::string& name, uint32_t dimension,
                                        v1::Metric metric);
  // A space with every setting (text index included); the server fills in
  // created_at_us, episode_count and text.tokenizer.
  absl::StatusOr<v1::Space> CreateSpace(const v1::Space& space);
  absl::StatusOr<v1::Space> GetSpace(const std::string& name);
  absl::StatusOr<v1::ListSpacesResponse> ListSpaces();
  absl::StatusOr<uint64_t> DeleteSpace(const std::string& name);

  // Stores a batch all-or-nothing. Safe to retry: an episode without a
  // request_id gets a random one, and an UNAVAILABLE call is sent again
  // (ClientOptions::write_attempts), applied at most once. A generated id
  // never reports `deduplicated` (the earlier attempt was this call's own).
  // To retry a failed call by hand, set request ids yourself.
  absl::StatusOr<v1::PutEpisodesResponse> PutEpisodes(const v1::PutEpisodesRequest& request);
  absl::StatusOr<v1::Episode> GetEpisode(const std::string& space, uint64_t id);
  // The episode `agent_id` stored under a caller-chosen key.
  absl::StatusOr<v1::Episode> GetEpisodeByKey(const std::string& space, const std::string& agent_id,
                                              const std::string& key);
  absl::StatusOr<v1::Episode> UpdateEpisode(const v1::UpdateEpisodeRequest& request);
  // One page of versions (page_size 0: the server's default of 100).
  absl::StatusOr<v1::GetHistoryResponse> GetHistory(const std::string& space, uint64_t id,
                                                    uint32_t page_size = 0,
                                                    const std::string& page_token = "");
  absl::StatusOr<uint64_t> DeleteEpisodes(const v1::DeleteEpisodesRequest& request);
  absl::StatusOr<v1::ListEpisodesResponse> ListEpisodes(const v1::ListEpisodesRequest& request);
  absl::StatusOr<v1::ListAgentsResponse> ListAgents(const v1::ListAgentsRequest& request);
  // By vector, by text (query_text), or both (hybrid).
  absl::StatusOr<v1::SearchResponse> Search(const v1::SearchRequest& request);
  // The terms `text` becomes in the space's lexical index, in order; with
  // `embed`, also the vector the space's embedder makes of it.
  absl::StatusOr<v1::AnalyzeTextResponse> AnalyzeText(const std::string& space,
                                                      const std::string& text, bool embed = false);

  absl::StatusOr<v1::StatsResponse> Stats();
  // engramd's version, build, wire contract and features.
  absl::StatusOr<v1::ServerInfoResponse> ServerInfo();
  // Calls `progress` for each update; returns the final status. Cancel by
  // returning false from `progress`.
  absl::Status Compact(const std::function<bool(const v1::CompactProgress&)>& progress);
  // Rebuilds a space's vector index; `progress` as for Compact.
  absl::Status RebuildIndex(const std::string& space,
                            const std::function<bool(const v1::RebuildIndexProgress&)>& progress);
  absl::StatusOr<std::string> Checkpoint(const std::string& name);
  absl::StatusOr<v1::BackupInfo> Backup();
  absl::StatusOr<v1::ListBackupsResponse> ListBackups();
  absl::StatusOr<std::string> RestoreBackup(uint32_t backup_id, const std::string& name);
  absl::StatusOr<v1::VerifyBackupResponse> VerifyBackup(uint32_t backup_id);

  // KV caches (engram.v1.KVCacheService). SaveCache sends `header`, then one
  // message per call of `next_block` until it returns false; nothing is
  // stored unless every message is accepted and the stream completes.
  absl::StatusOr<v1::SaveCacheResponse> SaveCache(
      const v1::SaveCacheHeader& header, const std::function<bool(v1::KvBlock*)>& next_block);
  // Calls `on_header` once, then `on_block` per layer-block (false cancels).
  absl::Status LoadCache(const v1::LoadCacheRequest& request,
                         const std::function<void(const v1::LoadCacheHeader&)>& on_header,
                         const std::function<bool(v1::KvBlock&)>& on_block);
  absl::StatusOr<v1::MatchPrefixResponse> MatchPrefix(const v1::MatchPrefixRequest& request);
  // One page of caches (page_size 0: the server's default of 100); pass the
  // response's next_page_token to get the next one.
  absl::StatusOr<v1::ListCachesResponse> ListCaches(const std::string& agent_id,
                                                    uint32_t page_size = 0,
                                                    const std::string& page_token = "");
  absl::StatusOr<v1::DeleteCacheResponse> DeleteCache(const std::string& agent_id,
                                                      const std::string& model_id);
  absl::StatusOr<v1::KvStatsResponse> KvStats();
  absl::StatusOr<v1::ExportCacheResponse> ExportCache(const std::string& agent_id,
                                                      const std::string& model_id,
                                                      const std::string& path);
  absl::StatusOr<v1::ImportCacheResponse> ImportCache(const std::string& path,
                                                      const std::string& agent_id);

  v1::MemoryService::Stub& memory() { return *memory_; }
  v1::KVCacheService::Stub& kv() { return *kv_; }
  v1::AdminService::Stub& admin() { return *admin_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }

 private:
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Call(Stub& stub,
                                grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                                             Response*),
                                const Request& request);

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::MemoryService::Stub> memory_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
  std::unique_ptr<v1::KVCacheService::Stub> kv_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
};

// grpc::Status -> absl::Status (same codes and message; the retry delay
// that Client's calls add from the trailers, read by RetryAfter() in
// common/retry_after.h, is not in a grpc::Status).
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace engram::client
