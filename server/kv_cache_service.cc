#include "server/kv_cache_service.h"

#include <algorithm>
#include <deque>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/status_convert.h"
#include "storage/kvcache/kv_files.h"

namespace engram::server {
namespace {

using kvcache::FloatType;
using kvcache::ModelSpec;

v1::KvDtype DtypeToProto(FloatType type) {
  return type == FloatType::kFloat16 ? v1::KV_DTYPE_FLOAT16 : v1::KV_DTYPE_BFLOAT16;
}

void ModelToProto(const ModelSpec& model, v1::KvModel* out) {
  out->set_model_id(model.model_id);
  out->set_n_layers(model.n_layers);
  out->set_n_kv_heads(model.n_kv_heads);
  out->set_head_dim(model.head_dim);
  out->set_dtype(DtypeToProto(model.dtype));
  out->set_kv_bits(static_cast<uint32_t>(model.codec.bits));
  out->set_kv_group_size(static_cast<uint32_t>(model.codec.group_size));
}

void CacheInfoToProto(const kvcache::CacheManifest& manifest, v1::CacheInfo* out) {
  out->set_agent_id(manifest.agent_id);
  ModelToProto(manifest.model, out->mutable_model());
  out->set_tokens(manifest.tokens.size());
  out->set_blocks(static_cast<uint32_t>(manifest.block_count()));
  out->set_bytes(manifest.LogicalBytes());
  out->set_updated_at_us(manifest.updated_at_us);
}

kvcache::QuantizedPart PartFromProto(const v1::QuantizedTensor& tensor) {
  return kvcache::QuantizedPart{tensor.weights(), tensor.scales(), tensor.biases()};
}

// ---- SaveCache -----------------------------------------------------------

class SaveReactor final : public grpc::ServerReadReactor<v1::SaveCacheRequest> {
 public:
  SaveReactor(KvCacheServiceImpl* service, grpc::CallbackServerContext* context,
              v1::SaveCacheResponse* response)
      : service_(service),
        context_(context),
        response_(response),
        deadline_(CallDeadline(context)) {
    absl::StatusOr<auth::Caller> caller = service_->runner()->Admit(context, "SaveCache");
    if (!caller.ok()) {
      Done(caller.status());
      return;
    }
    caller_ = *std::move(caller);
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    bool queued = service_->runner()->pool(CallClass::kWrite)->TrySubmit([this, ok] {
      if (!ok) {
        Done(Commit());
        return;
      }
      absl::Status handled = Handle();
      if (!handled.ok()) {
        Done(handled);
        return;
      }
      StartRead(&request_);
    });
    if (!queued) Done(RpcRunner::Overloaded(CallClass::kWrite));
  }

  void OnDone() override {
    service_->runner()->metrics()->RecordRpc("SaveCache", status_.code(), absl::Now() - start_);
    // Dropping an uncommitted save deletes what it staged: not on gRPC's thread.
    if (!service_->runner()->pool(CallClass::kWrite)->TrySubmit([this] { delete this; })) {
      delete this;
    }
  }

 private:
  absl::Status Handle() {
    if (context_->IsCancelled()) return absl::CancelledError("the client cancelled the save");
    if (absl::Now() >= deadline_) {
      return absl::DeadlineExceededError("the call's deadline passed during the save");
    }
    if (request_.has_header()) {
      if (save_ != nullptr) return absl::InvalidArgumentError("a second header in one save");
      const v1::SaveCacheHeader& header = request_.header();
      if (absl::Status owned = service_->placement().CheckOwner(caller_.tenant, header.agent_id());
          !owned.ok()) {
        return owned;
      }
      absl::StatusOr<ModelSpec> model = service_->ModelFromProto(header.model());
      if (!model.ok()) return model.status();
      bool quantized = header.encoding() != v1::KV_ENCODING_FLOAT;
      // Refused by its declared size before anything is copied or allocated.
      const size_t max_tokens = service_->store()->options().max_tokens;
      if (header.token_ids().empty() || static_cast<size_t>(header.token_ids_size()) > max_tokens) {
        return absl::InvalidArgumentError(
            absl::StrCat("a cache holds 1-", max_tokens, " tokens, got ", header.token_ids_size()));
      }
      // At most this many bytes of blocks (fewer when a prefix is shared).
      const size_t count = static_cast<size_t>(header.token_ids_size());
      const uint64_t bytes =
          (count / kvcache::kBlockTokens * model->BlockBytes(kvcache::kBlockTokens) +
           (count % kvcache::kBlockTokens == 0
                ? 0
                : model->BlockBytes(count % kvcache::kBlockTokens))) *
          model->n_layers;
      if (absl::Status admitted = service_->runner()->limits()->AdmitKvSave(caller_.tenant, bytes);
          !admitted.ok()) {
        return admitted;
      }
      std::vector<uint32_t> tokens(header.token_ids().begin(), header.token_ids().end());
      auto save = service_->store()->BeginSave(caller_.tenant, header.agent_id(), *model,
                                               std::move(tokens));
      if (!save.ok()) return save.status();
      save_ = *std::move(save);
      assembler_.emplace(*model, save_->manifest().tokens.size(), quantized, save_.get());
      return absl::OkStatus();
    }
    if (!request_.has_block()) return absl::InvalidArgumentError("an empty message in a save");
    if (save_ == nullptr) {
      return absl::InvalidArgumentError("the first message of a save must be its header");
    }
    const v1::KvBlock& block = request_.block();
    kvcache::BlockMessage message;
    message.layer = block.layer();
    message.block = block.block();
    message.keys = block.keys();
    message.values = block.values();
    message.quantized_keys = PartFromProto(block.quantized_keys());
    message.quantized_values = PartFromProto(block.quantized_values());
    return assembler_->Add(message);
  }

  absl::Status Commit() {
    if (context_->IsCancelled()) return absl::CancelledError("the client cancelled the save");
    if (save_ == nullptr)
      return absl::InvalidArgumentError("the save stream ended before its header");
    absl::StatusOr<kvcache::SaveResult> result = save_->Commit();
    if (!result.ok()) return result.status();
    response_->set_tokens(result->tokens);
    response_->set_blocks(result->blocks);
    response_->set_layer_blocks_written(result->layer_blocks_written);
    response_->set_layer_blocks_shared(result->layer_blocks_shared);
    return absl::OkStatus();
  }

  void Done(const absl::Status& status) {
    status_ = status;
    Finish(RpcRunner::FinishStatus(context_, status));
  }

  KvCacheServiceImpl* service_;
  grpc::CallbackServerContext* context_;
  v1::SaveCacheResponse* response_;
  const absl::Time deadline_;
  const absl::Time start_ = absl::Now();
  auth::Caller caller_;
  v1::SaveCacheRequest request_;
  std::unique_ptr<kvcache::KvCacheStore::PendingSave> save_;
  std::optional<kvcache::SaveAssembler> assembler_;
  absl::Status status_ = absl::CancelledError();
};

// ---- LoadCache -----------------------------------------------------------

// Copies rows [first, first + count) of each head from a [heads, tokens, width]
// byte array.
void AppendRows(std::string_view tensor, size_t heads, size_t tokens, size_t width, size_t first,
                size_t count, std::string* out) {
  if (first == 0 && count == tokens) {
    out->append(tensor);
    return;
  }
  for (size_t head = 0; head < heads; ++head) {
    out->append(tensor.substr((head * tokens + first) * width, count * width));
  }
}

// The producer (on the worker pool) builds messages a few ahead of the
// network and parks when kQueueDepth wait, releasing its worker; the write
// completion that makes room resubmits it. A slow client therefore holds no
// worker thread (the block prefetcher's own threads read ahead from disk).
class LoadReactor final : public grpc::ServerWriteReactor<v1::LoadCacheResponse> {
 public:
  static constexpr size_t kQueueDepth = 8;  // messages prepared ahead of the network

  LoadReactor(KvCacheServiceImpl* service, grpc::CallbackServerContext* context,
              const v1::LoadCacheRequest* request)
      : service_(service), context_(context), request_(*request), deadline_(CallDeadline(context)) {
    absl::StatusOr<auth::Caller> caller = service_->runner()->Admit(context, "LoadCache");
    if (!caller.ok()) {
      Refuse(caller.status());
      return;
    }
    caller_ = *std::move(caller);
    if (!service_->runner()->pool(CallClass::kRead)->TrySubmit([this] { Produce(); })) {
      Refuse(RpcRunner::Overloaded(CallClass::kRead));
    }
  }

  void OnWriteDone(bool ok) override {
    bool release = false;
    {
      absl::MutexLock lock(&mutex_);
      writing_ = false;
      if (!ok) cancelled_ = true;
      MaybeWriteLocked();
      release = ResumeLocked();
    }
    if (release) Unref();
  }
  void OnCancel() override {
    bool release = false;
    {
      absl::MutexLock lock(&mutex_);
      cancelled_ = true;
      release = ResumeLocked();
    }
    if (release) Unref();
  }
  void OnDone() override {
    absl::StatusCode code;
    {
      absl::MutexLock lock(&mutex_);
      code = result_.value_or(absl::CancelledError()).code();
    }
    service_->runner()->metrics()->RecordRpc("LoadCache", code, absl::Now() - start_);
    Unref();
  }

 private:
  // Resubmits a parked producer once there is room (or the call ended).
  // True when it could not be resubmitted and its reference must go.
  bool ResumeLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    // Half empty before the producer runs again: fewer, longer producer runs.
    if (!parked_ || (queue_.size() > kQueueDepth / 2 && !cancelled_)) return false;
    parked_ = false;
    if (service_->runner()->pool(CallClass::kRead)->TrySubmit([this] { Produce(); })) return false;
    result_ = RpcRunner::Overloaded(CallClass::kRead);
    MaybeWriteLocked();
    return true;
  }

  // Runs on the pool until the queue is full (then parks) or the load ends.
  void Produce() {
    absl::Status status = absl::OkStatus();
    if (reader_ == nullptr) status = Setup();
    while (status.ok()) {
      {
        absl::MutexLock lock(&mutex_);
        if (cancelled_) {
          status = absl::CancelledError("the client went away");
          break;
        }
        if (next_ == order_.size()) break;
        if (queue_.size() >= kQueueDepth) {
          parked_ = true;  // OnWriteDone resubmits Produce
          return;
        }
      }
      absl::StatusOr<v1::LoadCacheResponse> message = NextMessage();
      if (!message.ok()) {
        status = message.status();
        break;
      }
      absl::MutexLock lock(&mutex_);
      queue_.push_back(*std::move(message));
      MaybeWriteLocked();
    }
    {
      absl::MutexLock lock(&mutex_);
      result_ = status;
      MaybeWriteLocked();
    }
    reader_.reset();  // joins the prefetch threads before the reference goes
    Unref();
  }

  // Checks the request, queues the header and starts reading blocks.
  absl::Status Setup() {
    const std::string& tenant = caller_.tenant;
    absl::StatusOr<kvcache::CacheManifest> manifest =
        service_->store()->GetManifest(tenant, request_.agent_id(), request_.model_id());
    if (!manifest.ok()) return manifest.status();
    const ModelSpec& model = manifest->model;
    if (request_.has_expect_model()) {
      absl::StatusOr<ModelSpec> expected = service_->ModelFromProto(request_.expect_model());
      if (!expected.ok()) return expected.status();
      if (!(*expected == model)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "the stored cache is of ", model.Describe(), ", not ", expected->Describe()));
      }
    }
    const size_t total = manifest->tokens.size();
    start_token_ = request_.token_start();
    end_token_ = request_.token_end() == 0 ? total : request_.token_end();
    if (start_token_ >= end_token_ || end_token_ > total) {
      return absl::OutOfRangeError(absl::StrCat("token range [", start_token_, ", ", end_token_,
                                                ") is not inside the cache's ", total, " tokens"));
    }
    as_float_ = request_.encoding() == v1::KV_ENCODING_FLOAT;
    out_type_ = model.dtype;
    if (request_.output_dtype() == v1::KV_DTYPE_FLOAT16) out_type_ = FloatType::kFloat16;
    if (request_.output_dtype() == v1::KV_DTYPE_BFLOAT16) out_type_ = FloatType::kBFloat16;

    v1::LoadCacheResponse header;
    v1::LoadCacheHeader* h = header.mutable_header();
    ModelToProto(model, h->mutable_model());
    h->set_total_tokens(total);
    h->set_token_start(static_cast<uint32_t>(start_token_));
    h->set_token_end(static_cast<uint32_t>(end_token_));
    h->mutable_token_ids()->Add(manifest->tokens.begin() + start_token_,
                                manifest->tokens.begin() + end_token_);
    h->set_encoding(as_float_ ? v1::KV_ENCODING_FLOAT : v1::KV_ENCODING_QUANTIZED);
    h->set_dtype(DtypeToProto(out_type_));
    {
      absl::MutexLock lock(&mutex_);
      queue_.push_back(std::move(header));
      MaybeWriteLocked();
    }
    const size_t first_block = start_token_ / kvcache::kBlockTokens;
    const size_t last_block = (end_token_ - 1) / kvcache::kBlockTokens;
    for (uint32_t layer = 0; layer < model.n_layers; ++layer) {
      for (size_t block = first_block; block <= last_block; ++block) {
        order_.emplace_back(layer, static_cast<uint32_t>(block));
      }
    }
    manifest_ = *std::move(manifest);
    reader_ = std::make_unique<kvcache::KvCacheStore::BlockPrefetcher>(service_->store(), tenant,
                                                                       *manifest_, order_);
    return absl::OkStatus();
  }

  // The next layer-block's message (quantized, or dequantized), cut to the range.
  absl::StatusOr<v1::LoadCacheResponse> NextMessage() {
    if (absl::Now() >= deadline_) {
      return absl::DeadlineExceededError("the call's deadline passed during the load");
    }
    const auto [layer, block] = order_[next_++];
    absl::StatusOr<kvcache::BlockBytes> bytes = reader_->Next();
    if (!bytes.ok()) return bytes.status();
    const ModelSpec& model = manifest_->model;
    const size_t heads = model.n_kv_heads;
    const size_t words = model.codec.WordsPerRow(model.head_dim) * 4;
    const size_t groups = model.codec.GroupsPerRow(model.head_dim) * 2;
    const size_t block_start = size_t{block} * kvcache::kBlockTokens;
    const size_t tokens = manifest_->BlockTokens(block);
    const size_t first = std::max(start_token_, block_start) - block_start;
    const size_t count = std::min(end_token_, block_start + tokens) - block_start - first;
    v1::LoadCacheResponse message;
    v1::KvBlock* out = message.mutable_block();
    out->set_layer(layer);
    out->set_block(block);
    out->set_token_offset(static_cast<uint32_t>(block_start + first));
    out->set_tokens(static_cast<uint32_t>(count));
    std::string_view data(**bytes);
    const size_t weight_bytes = model.WeightBytes(tokens), scale_bytes = model.ScaleBytes(tokens);
    for (int part = 0; part < 2; ++part) {
      const size_t base = part * (weight_bytes + 2 * scale_bytes);
      std::string_view w = data.substr(base, weight_bytes);
      std::string_view s = data.substr(base + weight_bytes, scale_bytes);
      std::string_view b = data.substr(base + weight_bytes + scale_bytes, scale_bytes);
      if (as_float_) {
        std::string* target = part == 0 ? out->mutable_keys() : out->mutable_values();
        target->resize(heads * count * model.head_dim * 2);
        for (size_t head = 0; head < heads; ++head) {
          size_t row = head * tokens + first;
          kvcache::Dequantize(
              reinterpret_cast<const uint32_t*>(w.data() + row * words),
              reinterpret_cast<const uint16_t*>(s.data() + row * groups),
              reinterpret_cast<const uint16_t*>(b.data() + row * groups), model.dtype, count,
              model.head_dim, model.codec, out_type_,
              reinterpret_cast<uint16_t*>(target->data() + head * count * model.head_dim * 2));
        }
      } else {
        v1::QuantizedTensor* target =
            part == 0 ? out->mutable_quantized_keys() : out->mutable_quantized_values();
        AppendRows(w, heads, tokens, words, first, count, target->mutable_weights());
        AppendRows(s, heads, tokens, groups, first, count, target->mutable_scales());
        AppendRows(b, heads, tokens, groups, first, count, target->mutable_biases());
      }
    }
    return message;
  }

  void MaybeWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
    if (writing_ || finished_) return;
    if (!queue_.empty()) {
      current_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      StartWrite(&current_);
      return;
    }
    if (result_.has_value()) {
      finished_ = true;
      Finish(RpcRunner::FinishStatus(context_, *result_));
    }
  }

  void Unref() {
    if (refs_.fetch_sub(1) == 1) delete this;
  }
  // Finishes with `status` without starting the producer.
  void Refuse(const absl::Status& status) {
    absl::MutexLock lock(&mutex_);
    result_ = status;
    MaybeWriteLocked();
    refs_.fetch_sub(1);  // no producer holds a reference
  }

  KvCacheServiceImpl* service_;
  grpc::CallbackServerContext* context_;
  const v1::LoadCacheRequest request_;
  const absl::Time deadline_;
  const absl::Time start_ = absl::Now();
  auth::Caller caller_;
  std::atomic<int> refs_{2};  // the producer's and OnDone's

  // Producer state: touched by one Produce run at a time.
  std::optional<kvcache::CacheManifest> manifest_;
  std::vector<std::pair<uint32_t, uint32_t>> order_;  // (layer, block) in stream order
  std::unique_ptr<kvcache::KvCacheStore::BlockPrefetcher> reader_;
  size_t next_ = 0;
  size_t start_token_ = 0, end_token_ = 0;
  bool as_float_ = false;
  FloatType out_type_ = FloatType::kFloat16;

  absl::Mutex mutex_;
  std::deque<v1::LoadCacheResponse> queue_ ABSL_GUARDED_BY(mutex_);
  v1::LoadCacheResponse current_ ABSL_GUARDED_BY(mutex_);
  std::optional<absl::Status> result_ ABSL_GUARDED_BY(mutex_);
  bool writing_ ABSL_GUARDED_BY(mutex_) = false;
  bool finished_ ABSL_GUARDED_BY(mutex_) = false;
  bool cancelled_ ABSL_GUARDED_BY(mutex_) = false;
  bool parked_ ABSL_GUARDED_BY(mutex_) = false;
};

}  // namespace

absl::StatusOr<ModelSpec> KvCacheServiceImpl::ModelFromProto(const v1::KvModel& proto) const {
  ModelSpec model;
  model.model_id = proto.model_id();
  model.n_layers = proto.n_layers();
  model.n_kv_heads = proto.n_kv_heads();
  model.head_dim = proto.head_dim();
  switch (proto.dtype()) {
    case v1::KV_DTYPE_FLOAT16:
      model.dtype = FloatType::kFloat16;
      break;
    case v1::KV_DTYPE_BFLOAT16:
      model.dtype = FloatType::kBFloat16;
      break;
    default:
      return absl::InvalidArgumentError(
          "model.dtype must be KV_DTYPE_FLOAT16 or KV_DTYPE_BFLOAT16");
  }
  model.codec.bits = proto.kv_bits() == 0 ? 4 : static_cast<int>(proto.kv_bits());
  model.codec.group_size =
      proto.kv_group_size() == 0 ? 64 : static_cast<int>(proto.kv_group_size());
  if (absl::Status valid = model.Validate(); !valid.ok()) return valid;
  size_t message_bytes = 2 * model.FloatTensorBytes(kvcache::kBlockTokens) + 4096;
  if (message_bytes > max_message_bytes_) {
    return absl::InvalidArgumentError(
        absl::StrCat("one layer-block of ", model.Describe(), " takes ", message_bytes,
                     " bytes, more than max_message_bytes (", max_message_bytes_, ")"));
  }
  return model;
}

grpc::ServerReadReactor<v1::SaveCacheRequest>* KvCacheServiceImpl::SaveCache(
    grpc::CallbackServerContext* context, v1::SaveCacheResponse* response) {
  return new SaveReactor(this, context, response);
}

grpc::ServerWriteReactor<v1::LoadCacheResponse>* KvCacheServiceImpl::LoadCache(
    grpc::CallbackServerContext* context, const v1::LoadCacheRequest* request) {
  return new LoadReactor(this, context, request);
}

grpc::ServerUnaryReactor* KvCacheServiceImpl::MatchPrefix(grpc::CallbackServerContext* context,
                                                          const v1::MatchPrefixRequest* request,
                                                          v1::MatchPrefixResponse* response) {
  return runner_->Unary(
      context, "MatchPrefix", CallClass::kRead, [=, this](const Call& call) -> absl::Status {
        absl::StatusOr<ModelSpec> model = ModelFromProto(request->model());
        if (!model.ok()) return model.status();
        std::span<const uint32_t> tokens(request->token_ids().data(), request->token_ids().size());
        const std::string& tenant = call.tenant();
        if (!request->agent_id().empty() || !request->any_agent()) {
          absl::StatusOr<uint64_t> own =
              store_->MatchAgentPrefix(tenant, request->agent_id(), *model, tokens);
          if (!own.ok()) return own.status();
          response->set_agent_tokens(*own);
        }
        if (request->any_agent()) {
          response->set_shared_tokens(store_->MatchSharedPrefix(tenant, *model, tokens));
        }
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* KvCacheServiceImpl::ListCaches(grpc::CallbackServerContext* context,
                                                         const v1::ListCachesRequest* request,
                                                         v1::ListCachesResponse* response) {
  return runner_->Unary(
      context, "ListCaches", CallClass::kRead, [=, this](const Call& call) -> absl::Status {
        auto page = store_->ListCaches(call.tenant(), request->agent_id(), request->page_size(),
                                       request->page_token());
        if (!page.ok()) return page.status();
        for (const kvcache::CacheManifest& manifest : page->caches) {
          CacheInfoToProto(manifest, response->add_caches());
        }
        response->set_next_page_token(page->next_page_token);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* KvCacheServiceImpl::DeleteCache(grpc::CallbackServerContext* context,
                                                          const v1::DeleteCacheRequest* request,
                                                          v1::DeleteCacheResponse* response) {
  return runner_->Unary(
      context, "DeleteCache", CallClass::kWrite, [=, this](const Call& call) -> absl::Status {
        auto deleted = store_->DeleteCache(call.tenant(), request->agent_id(), request->model_id());
        if (!deleted.ok()) return deleted.status();
        response->set_caches(deleted->caches);
        response->set_blocks_freed(deleted->digests_freed);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* KvCacheServiceImpl::Stats(grpc::CallbackServerContext* context,
                                                    const v1::KvStatsRequest*,
                                                    v1::KvStatsResponse* response) {
  return runner_->Unary(context, "KvStats", CallClass::kLookup,
                        [=, this](const Call& call) -> absl::Status {
                          kvcache::KvStoreStats stats = store_->Stats();
                          response->set_caches(stats.caches);
                          response->set_unique_layer_blocks(stats.unique_blocks);
                          response->set_stored_bytes(stats.stored_bytes);
                          response->set_pool_budget_bytes(stats.pool.budget_bytes);
                          response->set_pool_resident_bytes(stats.pool.resident_bytes);
                          response->set_pool_resident_blocks(stats.pool.resident_blocks);
                          response->set_pool_hits(stats.pool.hits);
                          response->set_pool_misses(stats.pool.misses);
                          response->set_pool_evictions(stats.pool.evictions);
                          return absl::OkStatus();
                        });
}

namespace {

// A file error as the client may see it: the server's absolute path of the
// file replaced by the path the client gave (errors from the filesystem
// name the file they failed on).
absl::Status InClientTerms(const absl::Status& status, const std::string& absolute,
                           const std::string& relative) {
  if (status.ok() || absolute.empty()) return status;
  std::string message(status.message());
  for (size_t at; (at = message.find(absolute)) != std::string::npos;) {
    message.replace(at, absolute.size(), relative);
  }
  return absl::Status(status.code(), message);
}

}  // namespace

std::string KvCacheServiceImpl::ExportRoot(const std::string& tenant) const {
  if (!per_tenant_exports_) return export_dir_;
  return (std::filesystem::path(export_dir_) / tenant).string();
}

grpc::ServerUnaryReactor* KvCacheServiceImpl::ExportCache(grpc::CallbackServerContext* context,
                                                          const v1::ExportCacheRequest* request,
                                                          v1::ExportCacheResponse* response) {
  return runner_->Unary(
      context, "ExportCache", CallClass::kAdmin, [=, this](const Call& call) -> absl::Status {
        absl::StatusOr<std::string> path =
            kvcache::ConfinedPath(ExportRoot(call.tenant()), request->path());
        if (!path.ok()) return path.status();
        auto exported = kvcache::ExportCache(store_, call.tenant(), request->agent_id(),
                                             request->model_id(), *path);
        if (!exported.ok()) return InClientTerms(exported.status(), *path, request->path());
        response->set_path(request->path());
        response->set_bytes(exported->bytes);
        response->set_tokens(exported->tokens);
        return absl::OkStatus();
      });
}

grpc::ServerUnaryReactor* KvCacheServiceImpl::ImportCache(grpc::CallbackServerContext* context,
                                                          const v1::ImportCacheRequest* request,
                                                          v1::ImportCacheResponse* response) {
  return runner_->Unary(
      context, "ImportCache", CallClass::kAdmin, [=, this](const Call& call) -> absl::Status {
        absl::StatusOr<std::string> path =
            kvcache::ConfinedPath(ExportRoot(call.tenant()), request->path());
        if (!path.ok()) return path.status();
        if (placement_.count() > 1) {
          // The file names its agent; checking it here would mean reading
          // the file twice, so a sharded import names the agent itself.
          if (request->agent_id().empty()) {
            return absl::InvalidArgumentError(
                "on a sharded engramd, ImportCache needs agent_id (the owner is checked by it)");
          }
          if (absl::Status owned = placement_.CheckOwner(call.tenant(), request->agent_id());
              !owned.ok()) {
            return owned;
          }
        }
        auto imported = kvcache::ImportCache(store_, call.tenant(), *path, request->agent_id());
        if (!imported.ok()) return InClientTerms(imported.status(), *path, request->path());
        CacheInfoToProto(*imported, response->mutable_cache());
        return absl::OkStatus();
      });
}

}  // namespace engram::server
