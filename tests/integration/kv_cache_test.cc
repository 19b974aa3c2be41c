// KVCacheService against a real engramd: streamed saves (float and
// quantized), loads (quantized, dequantized, token ranges), prefix matching,
// sharing, bad input, interrupted streams, kill -9 during a save, the RAM
// pool under a tiny budget, and export/import through engramctl.
#include <gtest/gtest.h>

#include <filesystem>
#include <numeric>
#include <random>

#include "clients/cpp/engram_client.h"
#include "storage/kvcache/kv_codec.h"
#include "storage/kvcache/kv_model.h"
#include "tests/util/daemon_fixture.h"
#include "tests/util/daemon_process.h"
#include "tests/util/engramctl.h"
#include "tests/util/temp_dir.h"

namespace engram {
namespace {

using client::Client;
using kvcache::FloatType;

constexpr uint32_t kLayers = 4, kHeads = 2, kHeadDim = 128;

v1::KvModel Model(const std::string& id = "llama-test") {
  v1::KvModel model;
  model.set_model_id(id);
  model.set_n_layers(kLayers);
  model.set_n_kv_heads(kHeads);
  model.set_head_dim(kHeadDim);
  model.set_dtype(v1::KV_DTYPE_FLOAT16);
  return model;
}

std::vector<uint32_t> Tokens(size_t count, uint32_t base) {
  std::vector<uint32_t> tokens(count);
  std::iota(tokens.begin(), tokens.end(), base);
  return tokens;
}

// fp16 K or V of one layer-block, [heads, tokens, head_dim], seeded by content.
std::string FloatTensor(uint32_t layer, uint32_t block, uint32_t tokens, int kv, uint32_t salt) {
  std::mt19937 rng(layer * 1000003 + block * 7919 + kv * 31 + salt);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::string bytes(size_t{kHeads} * tokens * kHeadDim * 2, '\0');
  auto* values = reinterpret_cast<uint16_t*>(bytes.data());
  for (size_t i = 0; i < bytes.size() / 2; ++i) {
    values[i] = kvcache::FromFloat(normal(rng), FloatType::kFloat16);
  }
  return bytes;
}

// Raw stream messages, for tests that drive SaveCache by hand: the header of
// a float save, and one full 256-token float layer-block.
v1::SaveCacheRequest FloatSaveHeader(const std::string& agent,
                                     const std::vector<uint32_t>& tokens) {
  v1::SaveCacheRequest message;
  message.mutable_header()->set_agent_id(agent);
  *message.mutable_header()->mutable_model() = Model();
  message.mutable_header()->mutable_token_ids()->Add(tokens.begin(), tokens.end());
  message.mutable_header()->set_encoding(v1::KV_ENCODING_FLOAT);
  return message;
}

v1::SaveCacheRequest FloatBlockMessage(uint32_t layer, uint32_t block) {
  v1::SaveCacheRequest message;
  message.mutable_block()->set_layer(layer);
  message.mutable_block()->set_block(block);
  message.mutable_block()->set_keys(FloatTensor(layer, block, 256, 0, 0));
  message.mutable_block()->set_values(FloatTensor(layer, block, 256, 1, 0));
  return message;
}

struct QuantizedTensorBytes {
  std::string weights, scales, biases;
};

QuantizedTensorBytes QuantizeLocally(const std::string& tensor, uint32_t tokens) {
  kvcache::CodecParams params{4, 64};
  size_t rows = size_t{kHeads} * tokens;
  QuantizedTensorBytes q;
  q.weights.resize(rows * params.WordsPerRow(kHeadDim) * 4);
  q.scales.resize(rows * params.GroupsPerRow(kHeadDim) * 2);
  q.biases.resize(q.scales.size());
  kvcache::Quantize(reinterpret_cast<const uint16_t*>(tensor.data()), FloatType::kFloat16, rows,
                    kHeadDim, params, reinterpret_cast<uint32_t*>(q.weights.data()),
                    reinterpret_cast<uint16_t*>(q.scales.data()),
                    reinterpret_cast<uint16_t*>(q.biases.data()));
  return q;
}

class KvCacheTest : public testing::DaemonTest {
 protected:
  void SetUp() override { StartDaemon(); }

  void StartDaemon() { StartDaemonWith({"--config", WriteConfig()}); }

  std::string WriteConfig() {
    std::string path = dir_.Sub("engramd.yaml");
    FILE* file = fopen(path.c_str(), "w");
    fprintf(file, "kv:\n  pool_mb: %d\n  export_dir: %s\nworker_threads: %d\n", pool_mb_,
            dir_.Sub("exports").c_str(), worker_threads_);
    fclose(file);
    return path;
  }

  // Saves `tokens` for `agent` as fp16 (or pre-quantized) blocks; `salt`
  // changes the tensor values; `skip` leaves layer-blocks out.
  absl::StatusOr<v1::SaveCacheResponse> Save(
      const std::string& agent, const std::vector<uint32_t>& tokens, bool quantized,
      uint32_t salt = 0, const v1::KvModel& model = Model(),
      std::function<bool(uint32_t, uint32_t)> skip = nullptr) {
    v1::SaveCacheHeader header;
    header.set_agent_id(agent);
    *header.mutable_model() = model;
    header.mutable_token_ids()->Add(tokens.begin(), tokens.end());
    header.set_encoding(quantized ? v1::KV_ENCODING_QUANTIZED : v1::KV_ENCODING_FLOAT);
    uint32_t layer = 0, block = 0;
    const uint32_t blocks = static_cast<uint32_t>(kvcache::BlockCount(tokens.size()));
    return client_->SaveCache(header, [&](v1::KvBlock* out) {
      while (layer < kLayers && skip && skip(layer, block)) {
        if (++block == blocks) block = 0, ++layer;
      }
      if (layer == kLayers) return false;
      uint32_t count = kvcache::BlockTokenCount(tokens.size(), block);
      out->set_layer(layer);
      out->set_block(block);
      std::string keys = FloatTensor(layer, block, count, 0, salt);
      std::string values = FloatTensor(layer, block, count, 1, salt);
      if (quantized) {
        QuantizedTensorBytes qk = QuantizeLocally(keys, count), qv = QuantizeLocally(values, count);
        out->mutable_quantized_keys()->set_weights(qk.weights);
        out->mutable_quantized_keys()->set_scales(qk.scales);
        out->mutable_quantized_keys()->set_biases(qk.biases);
        out->mutable_quantized_values()->set_weights(qv.weights);
        out->mutable_quantized_values()->set_scales(qv.scales);
        out->mutable_quantized_values()->set_biases(qv.biases);
      } else {
        out->set_keys(keys);
        out->set_values(values);
      }
      if (++block == blocks) block = 0, ++layer;
      return true;
    });
  }

  // Loads and checks every message against what Save sent (quantized here).
  void ExpectLoadMatches(const std::string& agent, const std::vector<uint32_t>& tokens,
                         uint32_t salt, v1::KvEncoding encoding, uint32_t start = 0,
                         uint32_t end = 0) {
    v1::LoadCacheRequest request;
    request.set_agent_id(agent);
    request.set_model_id("llama-test");
    request.set_encoding(encoding);
    request.set_token_start(start);
    request.set_token_end(end);
    uint32_t range_end = end == 0 ? static_cast<uint32_t>(tokens.size()) : end;
    bool saw_header = false;
    size_t blocks_seen = 0;
    uint64_t tokens_seen = 0;
    absl::Status status = client_->LoadCache(
        request,
        [&](const v1::LoadCacheHeader& header) {
          saw_header = true;
          EXPECT_EQ(header.total_tokens(), tokens.size());
          EXPECT_EQ(header.token_ids_size(), static_cast<int>(range_end - start));
          EXPECT_EQ(header.token_ids(0), tokens[start]);
        },
        [&](v1::KvBlock& block) {
          ++blocks_seen;
          if (block.layer() == 0) tokens_seen += block.tokens();
          uint32_t count = kvcache::BlockTokenCount(tokens.size(), block.block());
          uint32_t first = block.token_offset() - block.block() * kvcache::kBlockTokens;
          for (int kv = 0; kv < 2; ++kv) {
            QuantizedTensorBytes q =
                QuantizeLocally(FloatTensor(block.layer(), block.block(), count, kv, salt), count);
            const size_t words = kHeadDim / 8 * 4, groups = kHeadDim / 64 * 2;
            for (uint32_t head = 0; head < kHeads; ++head) {
              size_t row = size_t{head} * count + first;
              if (encoding == v1::KV_ENCODING_FLOAT) {
                std::string expected(block.tokens() * kHeadDim * 2, '\0');
                kvcache::Dequantize(
                    reinterpret_cast<const uint32_t*>(q.weights.data() + row * words),
                    reinterpret_cast<const uint16_t*>(q.scales.data() + row * groups),
                    reinterpret_cast<const uint16_t*>(q.biases.data() + row * groups),
                    FloatType::kFloat16, block.tokens(), kHeadDim, {4, 64}, FloatType::kFloat16,
                    reinterpret_cast<uint16_t*>(expected.data()));
                const std::string& got = kv == 0 ? block.keys() : block.values();
                EXPECT_EQ(got.substr(head * expected.size(), expected.size()), expected);
              } else {
                const v1::QuantizedTensor& got =
                    kv == 0 ? block.quantized_keys() : block.quantized_values();
                size_t w = block.tokens() * words, g = block.tokens() * groups;
                EXPECT_EQ(got.weights().substr(head * w, w), q.weights.substr(row * words, w))
                    << "layer " << block.layer() << " block " << block.block();
                EXPECT_EQ(got.scales().substr(head * g, g), q.scales.substr(row * groups, g));
                EXPECT_EQ(got.biases().substr(head * g, g), q.biases.substr(row * groups, g));
              }
            }
          }
          return true;
        });
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_TRUE(saw_header);
    EXPECT_EQ(tokens_seen, range_end - start);
    EXPECT_GT(blocks_seen, 0u);
  }

  absl::StatusCode LoadCode(const v1::LoadCacheRequest& request) {
    return client_
        ->LoadCache(
            request, [](const auto&) {}, [](auto&) { return true; })
        .code();
  }

  int pool_mb_ = 64;
  int worker_threads_ = 16;
};

TEST_F(KvCacheTest, FloatSaveLoadsBackQuantizedDequantizedAndByRange) {
  std::vector<uint32_t> tokens = Tokens(600, 100);
  auto saved = Save("a", tokens, /*quantized=*/false, 1);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->tokens(), 600u);
  EXPECT_EQ(saved->blocks(), 3u);
  EXPECT_EQ(saved->layer_blocks_written(), 12u);
  ExpectLoadMatches("a", tokens, 1, v1::KV_ENCODING_QUANTIZED);
  ExpectLoadMatches("a", tokens, 1, v1::KV_ENCODING_FLOAT);
  ExpectLoadMatches("a", tokens, 1, v1::KV_ENCODING_QUANTIZED, 200, 520);
  ExpectLoadMatches("a", tokens, 1, v1::KV_ENCODING_FLOAT, 300, 301);

  auto list = client_->ListCaches("");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->caches_size(), 1);
  EXPECT_EQ(list->caches(0).tokens(), 600u);
  EXPECT_EQ(list->caches(0).model().kv_bits(), 4u);
  // Q4 at 4.5 bits/element: 0.28x of fp16.
  double fp16_bytes = 600.0 * kLayers * kHeads * kHeadDim * 2 * 2;
  EXPECT_NEAR(list->caches(0).bytes() / fp16_bytes, 0.28125, 1e-9);
  EXPECT_TRUE(list->next_page_token().empty());
  EXPECT_EQ(client_->ListCaches("", 0, "not-hex").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->ListCaches("", 5000).status().code(), absl::StatusCode::kInvalidArgument);

  // Survives a restart (blocks now come from disk).
  StopDaemon();
  StartDaemon();
  ExpectLoadMatches("a", tokens, 1, v1::KV_ENCODING_QUANTIZED);
  auto stats = client_->KvStats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->caches(), 1u);
  EXPECT_GT(stats->pool_misses(), 0u);
}

TEST_F(KvCacheTest, QuantizedSaveIsStoredBitForBit) {
  std::vector<uint32_t> tokens = Tokens(300, 7);
  ASSERT_TRUE(Save("q", tokens, /*quantized=*/true, 2).ok());
  ExpectLoadMatches("q", tokens, 2, v1::KV_ENCODING_QUANTIZED);
}

TEST_F(KvCacheTest, PrefixMatchingAndSharingAcrossAgents) {
  std::vector<uint32_t> a = Tokens(700, 1);
  std::vector<uint32_t> b(a.begin(), a.begin() + 512);
  for (uint32_t t : Tokens(50, 90000)) b.push_back(t);
  ASSERT_TRUE(Save("a", a, false, 3).ok());
  // b omits the two blocks it shares with a: the server references a's.
  auto saved = Save("b", b, false, 3, Model(), [](uint32_t, uint32_t block) { return block < 2; });
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->layer_blocks_shared(), 8u);
  EXPECT_EQ(saved->layer_blocks_written(), 4u);
  auto stats = client_->KvStats();
  EXPECT_EQ(stats->unique_layer_blocks(), (3u + 1u) * kLayers);

  v1::MatchPrefixRequest match;
  match.set_agent_id("b");
  *match.mutable_model() = Model();
  match.mutable_token_ids()->Add(a.begin(), a.begin() + 650);
  match.set_any_agent(true);
  auto matched = client_->MatchPrefix(match);
  ASSERT_TRUE(matched.ok()) << matched.status();
  EXPECT_EQ(matched->agent_tokens(), 512u);
  EXPECT_EQ(matched->shared_tokens(), 512u);  // a's third block is 700 - 512 tokens long
  match.set_agent_id("a");
  EXPECT_EQ(client_->MatchPrefix(match)->agent_tokens(), 650u);

  ASSERT_TRUE(client_->DeleteCache("a", "").ok());
  ExpectLoadMatches("b", b, 3, v1::KV_ENCODING_QUANTIZED);
  EXPECT_EQ(client_->KvStats()->unique_layer_blocks(), 3u * kLayers);
  auto deleted = client_->DeleteCache("b", "llama-test");
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(deleted->blocks_freed(), 3u);
  EXPECT_EQ(client_->KvStats()->unique_layer_blocks(), 0u);
}

TEST_F(KvCacheTest, BadInputIsRefusedAndStoresNothing) {
  std::vector<uint32_t> tokens = Tokens(300, 5);
  auto code = [](const auto& result) { return result.status().code(); };
  // A stream that ends before every block arrived.
  EXPECT_EQ(code(Save("x", tokens, false, 0, Model(),
                      [](uint32_t layer, uint32_t) { return layer == 3; })),
            absl::StatusCode::kInvalidArgument);
  // dtype missing, head_dim not a multiple of the group, bits 3.
  v1::KvModel model = Model();
  model.clear_dtype();
  EXPECT_EQ(code(Save("x", tokens, false, 0, model)), absl::StatusCode::kInvalidArgument);
  model = Model();
  model.set_kv_bits(3);
  EXPECT_EQ(code(Save("x", tokens, false, 0, model)), absl::StatusCode::kInvalidArgument);
  // A block whose size does not match the geometry, and a NaN.
  for (int damage = 0; damage < 3; ++damage) {
    v1::SaveCacheHeader header;
    header.set_agent_id("x");
    *header.mutable_model() = Model();
    header.mutable_token_ids()->Add(tokens.begin(), tokens.end());
    header.set_encoding(v1::KV_ENCODING_FLOAT);
    bool sent = false;
    auto result = client_->SaveCache(header, [&](v1::KvBlock* block) {
      if (sent) return false;
      sent = true;
      block->set_layer(0);
      block->set_block(0);
      std::string keys = FloatTensor(0, 0, 256, 0, 0);
      if (damage == 0) keys.pop_back();
      if (damage == 1) keys[10] = 0, keys[11] = 0x7E;  // fp16 NaN
      block->set_keys(keys);
      block->set_values(damage == 2 ? "" : FloatTensor(0, 0, 256, 1, 0));
      return true;
    });
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << damage;
    EXPECT_FALSE(result.status().message().empty());
  }
  // A header declaring more tokens than a cache may hold (kv.max_tokens,
  // 131072 by default): refused by its size, before any block.
  {
    v1::SaveCacheHeader header;
    header.set_agent_id("x");
    *header.mutable_model() = Model();
    header.mutable_token_ids()->Resize(131073, 7);
    auto result = client_->SaveCache(header, [](v1::KvBlock*) { return false; });
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(result.status().message().find("1-131072 tokens, got 131073"), std::string::npos)
        << result.status();
  }
  // A stream whose first message is not a header.
  {
    grpc::ClientContext context;
    v1::SaveCacheResponse response;
    auto writer = client_->kv().SaveCache(&context, &response);
    v1::SaveCacheRequest message;
    message.mutable_block()->set_layer(0);
    writer->Write(message);
    writer->WritesDone();
    EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  // A client that cancels halfway.
  {
    grpc::ClientContext context;
    v1::SaveCacheResponse response;
    auto writer = client_->kv().SaveCache(&context, &response);
    ASSERT_TRUE(writer->Write(FloatSaveHeader("x", tokens)));
    ASSERT_TRUE(writer->Write(FloatBlockMessage(0, 0)));
    context.TryCancel();
    EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  auto list = client_->ListCaches("");
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->caches_size(), 0);
  EXPECT_EQ(client_->KvStats()->unique_layer_blocks(), 0u);

  // Loads: unknown agent, bad range, geometry mismatch.
  ASSERT_TRUE(Save("a", tokens, false).ok());
  v1::LoadCacheRequest load;
  load.set_agent_id("nobody");
  load.set_model_id("llama-test");
  EXPECT_EQ(LoadCode(load), absl::StatusCode::kNotFound);
  load.set_agent_id("a");
  load.set_token_start(290);
  load.set_token_end(400);
  EXPECT_EQ(LoadCode(load), absl::StatusCode::kOutOfRange);
  load.clear_token_start();
  load.clear_token_end();
  *load.mutable_expect_model() = Model();
  load.mutable_expect_model()->set_n_kv_heads(8);
  EXPECT_EQ(LoadCode(load), absl::StatusCode::kFailedPrecondition);
  v1::KvModel other = Model();
  other.set_head_dim(64);
  EXPECT_EQ(code(Save("a", tokens, false, 0, other)), absl::StatusCode::kFailedPrecondition);
}

TEST_F(KvCacheTest, KillDuringASaveLeavesNoPartialCache) {
  std::vector<uint32_t> tokens = Tokens(1024, 9);
  ASSERT_TRUE(Save("keep", Tokens(256, 1), false).ok());
  {
    grpc::ClientContext context;
    v1::SaveCacheResponse response;
    auto writer = client_->kv().SaveCache(&context, &response);
    ASSERT_TRUE(writer->Write(FloatSaveHeader("x", tokens)));
    for (uint32_t block = 0; block < 4; ++block) {
      ASSERT_TRUE(writer->Write(FloatBlockMessage(0, block)));
    }
    // Let the server stage what it received, then crash it mid-stream.
    for (int i = 0; i < 50 && client_->KvStats()->pool_resident_blocks() < 5; ++i) {
      absl::SleepFor(absl::Milliseconds(20));
    }
    daemon_->Kill9();
    EXPECT_FALSE(writer->Finish().ok());
  }
  StartDaemon();
  auto list = client_->ListCaches("");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->caches_size(), 1);
  EXPECT_EQ(list->caches(0).agent_id(), "keep");
  EXPECT_EQ(client_->KvStats()->unique_layer_blocks(), kLayers);
  ExpectLoadMatches("keep", Tokens(256, 1), 0, v1::KV_ENCODING_QUANTIZED);
}

TEST_F(KvCacheTest, SmallPoolEvictsAndRestoresFromDisk) {
  pool_mb_ = 1;  // one layer-block here is 73,728 bytes: 14 fit
  StopDaemon();
  StartDaemon();
  std::vector<uint32_t> tokens = Tokens(2048, 3);  // 8 blocks x 4 layers = 32 layer-blocks
  ASSERT_TRUE(Save("a", tokens, false, 4).ok());
  auto stats = client_->KvStats();
  EXPECT_GT(stats->pool_evictions(), 0u);
  EXPECT_LE(stats->pool_resident_bytes(), 1u << 20);
  ExpectLoadMatches("a", tokens, 4, v1::KV_ENCODING_QUANTIZED);
  EXPECT_GT(client_->KvStats()->pool_misses(), 0u);
}

TEST_F(KvCacheTest, ClientsThatStopReadingHoldNoWorkers) {
  worker_threads_ = 2;
  StopDaemon();
  StartDaemon();
  std::vector<uint32_t> tokens = Tokens(4096, 21);  // 8 MiB as fp16 per load
  ASSERT_TRUE(Save("big", tokens, /*quantized=*/true, 6).ok());
  // Four loads whose clients read one message and stop: their streams stall
  // once the transport's (small: no BDP probing) windows are full.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, 64 << 20);
  auto stalled_channel =
      grpc::CreateCustomChannel(daemon_->address(), grpc::InsecureChannelCredentials(), args);
  auto stalled = v1::KVCacheService::NewStub(stalled_channel);
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::LoadCacheResponse>>> readers;
  for (int i = 0; i < 4; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::LoadCacheRequest request;
    request.set_agent_id("big");
    request.set_model_id("llama-test");
    request.set_encoding(v1::KV_ENCODING_FLOAT);  // 4x the bytes: sure to stall
    readers.push_back(stalled->LoadCache(contexts.back().get(), request));
    // A server whose stalled loads each hold a worker would start the third
    // load only when one of them ends (here: at its 30 s deadline).
    v1::LoadCacheResponse first;
    absl::Time asked = absl::Now();
    ASSERT_TRUE(readers.back()->Read(&first));
    EXPECT_LT(absl::Now() - asked, absl::Seconds(3)) << "load " << i << " waited for a worker";
  }
  absl::SleepFor(absl::Milliseconds(300));
  // With 2 workers, a unary call still gets one.
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::ListCachesResponse list;
  grpc::Status status = client_->kv().ListCaches(&context, v1::ListCachesRequest(), &list);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(list.caches_size(), 1);
  for (auto& c : contexts) c->TryCancel();
  for (auto& reader : readers) reader->Finish().IgnoreError();
}

TEST_F(KvCacheTest, ExportImportAndDeleteThroughEngramctl) {
  std::vector<uint32_t> tokens = Tokens(400, 11);
  ASSERT_TRUE(Save("a", tokens, false, 5).ok());
  std::string address = daemon_->address();
  auto [code, out] =
      testing::RunCtl(address, "kv export --agent a --model llama-test a.safetensors");
  ASSERT_EQ(code, 0) << out;
  EXPECT_TRUE(std::filesystem::exists(dir_.Sub("exports/a.safetensors")));
  std::tie(code, out) = testing::RunCtl(address, "kv import a.safetensors --agent b");
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("\"agent_id\":\"b\""), std::string::npos) << out;
  ExpectLoadMatches("b", tokens, 5, v1::KV_ENCODING_QUANTIZED);
  std::tie(code, out) = testing::RunCtl(address, "kv list");
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find("\"agent_id\":\"a\""), std::string::npos);
  EXPECT_NE(out.find("\"agent_id\":\"b\""), std::string::npos);
  EXPECT_EQ(client_->KvStats()->unique_layer_blocks(), 2u * kLayers) << "b shares a's blocks";
  // Paths outside the export directory.
  std::tie(code, out) = testing::RunCtl(address, "kv export --agent a --model llama-test ../x");
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find("INVALID_ARGUMENT"), std::string::npos) << out;
  std::tie(code, out) = testing::RunCtl(address, "kv import /etc/passwd");
  EXPECT_NE(code, 0);
  // A name too long for the filesystem, and one with a newline: refused as
  // bad input, the message free of the server's directory.
  std::tie(code, out) =
      testing::RunCtl(address, "kv export --agent a --model llama-test " + std::string(300, 'p'));
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find("INVALID_ARGUMENT"), std::string::npos) << out;
  EXPECT_NE(out.find("names may have at most 255"), std::string::npos) << out;
  EXPECT_EQ(out.find(dir_.path()), std::string::npos) << out;
  std::tie(code, out) = testing::RunCtl(
      address, "kv export --agent a --model llama-test \"$(printf 'two\\nlines')\"");
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find("control character"), std::string::npos) << out;
  std::tie(code, out) = testing::RunCtl(address, "kv delete --agent a");
  ASSERT_EQ(code, 0) << out;
  std::tie(code, out) = testing::RunCtl(address, "kv delete --agent a");
  EXPECT_NE(code, 0);
  EXPECT_NE(out.find("NOT_FOUND"), std::string::npos) << out;
}

}  // namespace
}  // namespace engram
