// OpenAiEmbedder: an OpenAI-compatible /v1/embeddings endpoint, through
// libcurl. Ollama, vLLM, Hugging Face TEI and llama.cpp's server all answer
// this protocol:
//   POST {"model": M, "input": [texts], "encoding_format": "float"}
//   200  {"data": [{"index": i, "embedding": [floats]}, ...], ...}
//
// A call splits its texts into requests of at most batch_size texts, sent
// one after another. Each request is retried on a connection error, a
// timeout, HTTP 429 or 5xx, with exponential backoff (or the server's
// Retry-After), up to max_retries times and never past the call's deadline.
// An answer must be JSON of exactly that shape with one finite vector of
// the space's dimension per text; anything else is UNAVAILABLE with the
// reason. HTTP 400 and 413 mean the endpoint refused the input
// (INVALID_ARGUMENT). Only http and https, no redirects, answers over
// kMaxResponseBytes are cut off.
//
// The API key is read once at creation and sent as "Authorization: Bearer";
// it never appears in a log line or an error message.
//
// Thread safety: Embed may be called concurrently; each call uses its own
// curl handle (idle handles are pooled to keep connections alive).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "embed/embedder.h"

namespace engram::embed {

// The `count` vectors of `dimension` floats in an answer's body, placed by
// each item's "index" (or its position); UNAVAILABLE naming what is wrong
// with any other body. Exposed for tests and fuzzing.
absl::StatusOr<std::vector<std::vector<float>>> ParseEmbeddingsAnswer(const std::string& body,
                                                                      size_t count,
                                                                      uint32_t dimension);

class OpenAiEmbedder final : public Embedder {
 public:
  // Largest answer body read; a larger one is UNAVAILABLE.
  static constexpr size_t kMaxResponseBytes = 256 << 20;

  // INVALID_ARGUMENT for a URL that is not http(s), a batch size of 0, or an
  // API key variable or file that is named but absent or empty.
  static absl::StatusOr<std::unique_ptr<OpenAiEmbedder>> Create(OpenAiEmbedderOptions options);
  ~OpenAiEmbedder() override;

  const std::string& name() const override { return name_; }
  uint32_t dimension() const override { return options_.dimension; }
  absl::StatusOr<std::vector<std::vector<float>>> Embed(const std::vector<std::string>& texts,
                                                        uint32_t dimension,
                                                        absl::Time deadline) override;

 private:
  struct Reply;
  explicit OpenAiEmbedder(OpenAiEmbedderOptions options, std::string api_key);
  // One batch, with retries.
  absl::Status EmbedBatch(const std::vector<std::string>& texts, size_t begin, size_t end,
                          uint32_t dimension, absl::Time deadline,
                          std::vector<std::vector<float>>& out);
  // One HTTP attempt; its transport outcome and answer in `reply`.
  void Post(const std::string& body, absl::Duration timeout, Reply& reply);
  void* BorrowHandle();
  void ReturnHandle(void* handle);

  const std::string name_ = kOpenAiEmbedder;
  const OpenAiEmbedderOptions options_;
  const std::string api_key_;
  absl::Mutex handles_mutex_;
  std::vector<void*> idle_handles_ ABSL_GUARDED_BY(handles_mutex_);
};

}  // namespace engram::embed
