#include "server/admin_service.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/version.h"
#include "server/status_convert.h"

namespace engram::server {
namespace {

constexpr char kVersion[] = "0.1.0";

void BackupToProto(const storage::BackupInfo& info, v1::BackupInfo* out) {
  out->set_backup_id(info.backup_id);
  out->set_timestamp_s(info.timestamp_s);
  out->set_size_bytes(info.size_bytes);
  out->set_file_count(info.file_count);
}

// `root`/`name` for a new entry: name must be one safe path component and
// the entry must not exist yet. Errors name the entry, not the server's path.
absl::StatusOr<std::string> NewEntryPath(const std::string& root, const std::string& name,
                                         absl::string_view what, absl::string_view root_key) {
  if (!storage::IsValidName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " name ",
                     name.size() <= 64 ? absl::StrCat("'", name, "'")
                                       : absl::StrCat("of ", name.size(), " bytes"),
                     " must be 1-64 characters of [A-Za-z0-9_.-], not . or .."));
  }
  std::filesystem::path path = std::filesystem::absolute(std::filesystem::path(root) / name);
  if (std::filesystem::exists(path)) {
    return absl::AlreadyExistsError(
        absl::StrCat(what, " '", name, "' already exists in ", root_key));
  }
  return path.string();
}

// Streams the progress of a long task run on the worker pool (compaction,
// index rebuild). Only one write is in flight at a time; newer progress
// replaces a pending one. Deleted when both gRPC (OnDone) and the task have
// let go of it.
template <typename Progress>
class ProgressReactor final : public grpc::ServerWriteReactor<Progress> {
 public:
  using Report = std::function<void(Progress)>;
  // `task` reports progress and returns the call's status; it should stop
  // early when `*cancel` becomes true (the client cancelled or went away).
  using Task = std::function<absl::Status(const auth::Caller& caller, const Report& report,
                                          std::atomic<bool>* cancel)>;

  ProgressReactor(RpcRunner* runner, grpc::CallbackServerContext* context, std::string rpc,
                  Task task)
      : runner_(runner), context_(context), rpc_(std::move(rpc)) {
    absl::StatusOr<auth::Caller> caller = runner->Admit(context, rpc_);
    if (!caller.ok()) {
      Refuse(caller.status());
      return;
    }
    bool queued = runner->pool(CallClass::kAdmin)
                      ->TrySubmit([this, task = std::move(task), caller = *std::move(caller)] {
                        absl::Status status = task(
                            caller,
                            [this](Progress progress) {
                              absl::MutexLock lock(&mutex_);
                              pending_ = std::move(progress);
                              MaybeWriteLocked();
                            },
                            &cancel_);
                        {
                          absl::MutexLock lock(&mutex_);
                          result_ = status;
                          MaybeWriteLocked();
                        }
                        Unref();
                      });
    if (!queued) Refuse(RpcRunner::Overloaded(CallClass::kAdmin));
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mutex_);
    writing_ = false;
    if (!ok) cancel_ = true;  // the client is gone
    MaybeWriteLocked();
  }
  void OnCancel() override { cancel_ = true; }
  void OnDone() override {
    absl::StatusCode code;
    {
      absl::MutexLock lock(&mutex_);
      code = result_.value_or(absl::CancelledError()).code();
    }
    runner_->metrics()->RecordRpc(rpc_, code, absl::Now() - start_);
    Unref();
  }

 private:
  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    if (writing_ || finished_) return;
    if (pending_.has_value()) {
      current_ = *std::move(pending_);
      pending_.reset();
      writing_ = true;
      this->StartWrite(&current_);
      return;
    }
    if (result_.has_value()) {
      finished_ = true;
      this->Finish(RpcRunner::FinishStatus(context_, *result_));
    }
  }
  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }
  // Finishes with `status` without running the task.
  void Refuse(const absl::Status& status) {
    absl::MutexLock lock(&mutex_);
    result_ = status;
    MaybeWriteLocked();
    refs_.fetch_sub(1);  // no task holds a reference
  }

  RpcRunner* runner_;
  grpc::CallbackServerContext* const context_;
  const std::string rpc_;
  const absl::Time start_ = absl::Now();
  std::atomic<bool> cancel_{false};
  std::atomic<int> refs_{2};
  absl::Mutex mutex_;
  std::optional<Progress> pending_ ABSL_GUARDED_BY(mutex_);
  Progress current_ ABSL_GUARDED_BY(mutex_);
  std::optional<absl::Status> result_ ABSL_GUARDED_BY(mutex_);
  bool writing_ ABSL_GUARDED_BY(mutex_) = false;
  bool finished_ ABSL_GUARDED_BY(mutex_) = false;
};

void PartitionToProto(const retrieval::PartitionReport& report, v1::PartitionStats* out) {
  out->set_space(report.space);
  out->set_agent_id(report.agent_id);
  out->set_vectors(report.stats.vectors);
  out->set_deleted(report.stats.deleted);
  out->set_first_stage(index::FirstStageName(report.stats.first_stage));
  out->set_has_graph(report.stats.has_graph);
  out->set_beam_width(report.stats.default_beam_width);
  out->set_sample_recall(report.stats.sample_recall);
  out->set_binary_sample_recall(report.stats.binary_sample_recall);
  out->set_code_bytes(report.stats.code_bytes);
  out->set_graph_bytes(report.stats.graph_bytes);
  out->set_float_bytes(report.stats.float_bytes);
  out->set_build_seconds(report.stats.last_build_seconds);
}

}  // namespace

grpc::ServerUnaryReactor* AdminServiceImpl::Stats(grpc::CallbackServerContext* context,
                                                  const v1::StatsRequest*,
                                                  v1::StatsResponse* response) {
  return runner_->Unary(
      context, "Stats", CallClass::kLookup, [=, this](const Call& call) -> absl::Status {
        // A tenant's admin sees its own spaces and partitions; the server-wide
        // parts (column families, paths, the index's and scanner's health) are
        // the operator's (and everyone's while auth is off).
        const std::string& tenant = call.tenant();
        response->set_uptime_s(absl::ToInt64Seconds(absl::Now() - started_));
        response->set_version(kVersion);
        if (!tenant.empty()) {
          absl::StatusOr<std::vector<SpaceInfo>> spaces = engine_->ListSpaces(tenant);
          if (!spaces.ok()) return spaces.status();
          for (const SpaceInfo& space : *spaces) {
            v1::SpaceStats* out = response->add_spaces();
            out->set_name(space.name);
            out->set_dimension(space.dimension);
            out->set_episode_count(space.episode_count);
          }
          // What the partitions hold now; writes still queued are counted in
          // index_health.queued (Stats never waits for the indexer).
          for (const retrieval::PartitionReport& report : engine_->IndexStats(tenant)) {
            PartitionToProto(report, response->add_partitions());
          }
        }
        if (!call.caller.operator_scope) return absl::OkStatus();
        for (const storage::ColumnFamilyStats& cf : store_->ColumnFamilies()) {
          v1::ColumnFamilyStats* out = response->add_column_families();
          out->set_name(cf.name);
          out->set_estimated_keys(cf.estimated_keys);
          out->set_sst_bytes(cf.sst_bytes);
          out->set_memtable_bytes(cf.memtable_bytes);
        }
        response->set_sync_writes(config_.store.sync_writes);
        response->set_data_dir(std::filesystem::absolute(config_.store.data_dir).string());
        const retrieval::IndexHealth health = engine_->Health();
        v1::IndexHealth* index_health = response->mutable_index_health();
        index_health->set_queued(health.queued);
        index_health->set_add_failures(health.add_failures);
        index_health->set_healed(health.healed);
        index_health->set_snapshot_failures(health.snapshot_failures);
        index_health->set_last_error(health.last_error);
        const retrieval::EpisodeIndex::LoadReport load = engine_->IndexLoadReport();
        v1::IndexLoadStats* index_load = response->mutable_index_load();
        index_load->set_partitions_from_snapshots(load.partitions_from_snapshots);
        index_load->set_vectors_from_snapshots(load.vectors_from_snapshots);
        index_load->set_vectors_read_from_store(load.vectors_read_from_store);
        index_load->set_spaces_rebuilt(load.spaces_rebuilt);
        const index::ScannerStats scan = engine_->ScanStats();
        v1::ScanStats* out = response->mutable_scan();
        out->set_backend(scan.backend);
        out->set_reason(scan.reason);
        out->set_resident_partitions(scan.resident_partitions);
        out->set_resident_bytes(scan.resident_bytes);
        out->set_scans(scan.scans);
        out->set_launches(scan.launches);
        out->set_uploads(scan.uploads);
        out->set_appends(scan.appends);
        out->set_fallbacks(scan.fallbacks);
        return absl::OkStatus();
      });
}

grpc::ServerWriteReactor<v1::CompactProgress>* AdminServiceImpl::Compact(
    grpc::CallbackServerContext* context, const v1::CompactRequest*) {
  using Reactor = ProgressReactor<v1::CompactProgress>;
  return new Reactor(runner_, context, "Compact",
                     [store = store_](const auth::Caller&, const Reactor::Report& report,
                                      std::atomic<bool>* cancel) {
                       return store->Compact(
                           [&report](double fraction, const std::string& stage) {
                             v1::CompactProgress progress;
                             progress.set_fraction(fraction);
                             progress.set_stage(stage);
                             progress.set_done(fraction >= 1.0);
                             report(std::move(progress));
                           },
                           cancel);
                     });
}

grpc::ServerWriteReactor<v1::RebuildIndexProgress>* AdminServiceImpl::RebuildIndex(
    grpc::CallbackServerContext* context, const v1::RebuildIndexRequest* request) {
  using Reactor = ProgressReactor<v1::RebuildIndexProgress>;
  return new Reactor(
      runner_, context, "RebuildIndex",
      [engine = engine_, space = request->space()](
          const auth::Caller& caller, const Reactor::Report& report, std::atomic<bool>*) {
        uint64_t total = 0;
        absl::Status status =
            engine->RebuildIndex(caller.tenant, space, [&](uint64_t indexed, uint64_t of) {
              total = of;
              v1::RebuildIndexProgress progress;
              progress.set_indexed(indexed);
              progress.set_total(of);
              report(std::move(progress));
            });
        if (status.ok()) {
          v1::RebuildIndexProgress progress;
          progress.set_indexed(total);
          progress.set_total(total);
          progress.set_done(true);
          report(std::move(progress));
        }
        return status;
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::Checkpoint(grpc::CallbackServerContext* context,
                                                       const v1::CheckpointRequest* request,
                                                       v1::CheckpointResponse* response) {
  return runner_->Unary(
      context, "Checkpoint", CallClass::kAdmin, [=, this](const Call& call) -> absl::Status {
        absl::StatusOr<std::string> path =
            NewEntryPath(config_.checkpoint_dir, request->name(), "checkpoint", "checkpoint_dir");
        if (!path.ok()) return path.status();
        if (absl::Status s = store_->Checkpoint(*path); !s.ok()) return s;
        response->set_path(*path);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::Backup(grpc::CallbackServerContext* context,
                                                   const v1::BackupRequest*,
                                                   v1::BackupResponse* response) {
  return runner_->Unary(
      context, "Backup", CallClass::kAdmin, [=, this](const Call& call) -> absl::Status {
        absl::StatusOr<storage::BackupInfo> info = store_->CreateBackup(config_.backup_dir);
        if (!info.ok()) return info.status();
        BackupToProto(*info, response->mutable_backup());
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListBackups(grpc::CallbackServerContext* context,
                                                        const v1::ListBackupsRequest*,
                                                        v1::ListBackupsResponse* response) {
  return runner_->Unary(context, "ListBackups", CallClass::kLookup,
                        [=, this](const Call& call) -> absl::Status {
                          absl::StatusOr<std::vector<storage::BackupInfo>> backups =
                              store_->ListBackups(config_.backup_dir);
                          if (!backups.ok()) return backups.status();
                          for (const storage::BackupInfo& info : *backups)
                            BackupToProto(info, response->add_backups());
                          return absl::OkStatus();
                        });
}

grpc::ServerUnaryReactor* AdminServiceImpl::ServerInfo(grpc::CallbackServerContext* context,
                                                       const v1::ServerInfoRequest*,
                                                       v1::ServerInfoResponse* response) {
  return runner_->Unary(context, "ServerInfo", CallClass::kLookup,
                        [=, this](const Call& call) -> absl::Status {
                          response->set_version(kVersion);
                          response->set_build(kBuild);
                          response->set_api(kApi);
                          for (const std::string& name : engine_->EmbedderNames()) {
                            response->add_embedders(name);
                          }
                          index::ScannerStats scans = engine_->ScanStats();
                          response->set_scan_backend(scans.backend);
                          response->set_scan_backend_reason(scans.reason);
                          response->set_auth(!config_.auth.tokens_file.empty());
                          response->set_tls(!config_.tls.cert_file.empty());
                          response->set_started_at_us(absl::ToUnixMicros(started_));
                          response->set_tenant(call.tenant());
                          response->set_shard_index(config_.shard.index);
                          response->set_shard_count(config_.shard.count);
                          return absl::OkStatus();
                        });
}

grpc::ServerUnaryReactor* AdminServiceImpl::RestoreBackup(grpc::CallbackServerContext* context,
                                                          const v1::RestoreBackupRequest* request,
                                                          v1::RestoreBackupResponse* response) {
  return runner_->Unary(
      context, "RestoreBackup", CallClass::kAdmin, [=, this](const Call& call) -> absl::Status {
        absl::StatusOr<std::string> path =
            NewEntryPath(config_.restore_dir, request->name(), "restore", "restore_dir");
        if (!path.ok()) return path.status();
        absl::Status s =
            storage::EpisodeStore::RestoreBackup(config_.backup_dir, request->backup_id(), *path);
        if (!s.ok()) return s;
        response->set_path(*path);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* AdminServiceImpl::VerifyBackup(grpc::CallbackServerContext* context,
                                                         const v1::VerifyBackupRequest* request,
                                                         v1::VerifyBackupResponse* response) {
  return runner_->Unary(
      context, "VerifyBackup", CallClass::kAdmin, [=, this](const Call& call) -> absl::Status {
        absl::Status s = store_->VerifyBackup(config_.backup_dir, request->backup_id());
        if (absl::IsNotFound(s)) return s;
        response->set_ok(s.ok());
        response->set_message(s.ok() ? "backup verified (sizes and checksums)"
                                     : std::string(s.message()));
        return absl::OkStatus();
      });
}

}  // namespace engram::server
