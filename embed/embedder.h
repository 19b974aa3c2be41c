// Embedder: text -> vectors inside engramd, so that a caller can store and
// search episodes by text alone.
//
// A space names one of the embedders this server offers (SpaceInfo::embedder):
//   ""        none (the default): callers send their own vectors;
//   "static"  word vectors with SIF weighting, offline and CPU-only
//             (embed/static_embedder.h);
//   "openai"  an OpenAI-compatible /v1/embeddings endpoint: Ollama, vLLM,
//             TEI, llama.cpp's server, ... (embed/openai_embedder.h).
// Endpoints, model names and API keys are the server's configuration, never
// a request's: a caller picks an embedder by name and cannot make engramd
// call an address of its choosing.
//
// The engine embeds an episode that has text and no embedding before its
// WriteBatch (a failure writes nothing), and a query that has text and no
// vector before it searches (retrieval/engine.h).
//
// Thread safety: Embed may be called concurrently.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace engram::embed {

// The embedder names a space may hold; "" is none.
inline constexpr char kStaticEmbedder[] = "static";
inline constexpr char kOpenAiEmbedder[] = "openai";

class Embedder {
 public:
  virtual ~Embedder() = default;

  // "static" or "openai".
  virtual const std::string& name() const = 0;

  // The length of its vectors, or 0 while unknown (an endpoint whose
  // dimension was not configured: each answer is checked against the space).
  virtual uint32_t dimension() const = 0;

  // One vector of `dimension` floats per text, in order. Errors, each with a
  // message that names the embedder and never a credential:
  //   DEADLINE_EXCEEDED  `deadline` passed first;
  //   INVALID_ARGUMENT   the embedder refused a text (for instance, one with
  //                      no words it can embed, or over an endpoint's limit);
  //   UNAVAILABLE        any other failure: unreachable, HTTP errors after
  //                      retries, a malformed answer, a wrong dimension.
  virtual absl::StatusOr<std::vector<std::vector<float>>> Embed(
      const std::vector<std::string>& texts, uint32_t dimension, absl::Time deadline) = 0;

  // Embed for one text: its vector, or Embed's error.
  absl::StatusOr<std::vector<float>> EmbedText(const std::string& text, uint32_t dimension,
                                               absl::Time deadline) {
    absl::StatusOr<std::vector<std::vector<float>>> vectors = Embed({text}, dimension, deadline);
    if (!vectors.ok()) return vectors.status();
    return std::move(vectors->front());
  }
};

// An OpenAI-compatible embeddings endpoint (embed/openai_embedder.h).
struct OpenAiEmbedderOptions {
  // The endpoint's full URL, e.g. http://127.0.0.1:11434/v1/embeddings;
  // empty: the "openai" embedder is not offered. http and https only.
  // Default: "".
  std::string url;
  // The model name sent with each request. Default: "".
  std::string model;
  // The API key is read from this environment variable, or else from this
  // file (first line); neither: no Authorization header. The key is never
  // logged or put in an error. Defaults: "".
  std::string api_key_env;
  std::string api_key_file;
  // The vectors' length, checked at space creation; 0: not known until the
  // endpoint answers (each answer is checked against the space). Default: 0.
  uint32_t dimension = 0;
  // Most texts per HTTP request; more are split into several. Default: 64.
  uint32_t batch_size = 64;
  // Limit on one HTTP attempt (connecting included). Default: 10000.
  int timeout_ms = 10000;
  // Attempts after the first for a connection error, a timeout, HTTP 429 or
  // 5xx; each waits twice as long as the one before, starting here (or as
  // long as a Retry-After header says), within the call's deadline.
  // Defaults: 3 and 200.
  int max_retries = 3;
  int retry_backoff_ms = 200;
};

// Word vectors with SIF weighting (embed/static_embedder.h).
struct StaticEmbedderOptions {
  // A word-vector file written by scripts/fetch-word-vectors.sh; empty: the
  // "static" embedder is not offered. Default: "".
  std::string path;
};

struct EmbedderOptions {
  StaticEmbedderOptions static_vectors;
  OpenAiEmbedderOptions openai;
};

// The embedders one server offers, by name.
class Embedders {
 public:
  // Loads the static embedder's file and reads the API key now, so that a
  // bad path or a missing key stops startup instead of failing writes later.
  // INVALID_ARGUMENT naming the option at fault.
  static absl::StatusOr<std::unique_ptr<Embedders>> Create(const EmbedderOptions& options);
  // None offered (tests, tools).
  Embedders() = default;

  // The embedder called `name`, or nullptr when this server does not offer
  // it.
  Embedder* Find(const std::string& name) const;
  // The names offered, sorted.
  std::vector<std::string> Names() const;
  // Adds or replaces one (tests).
  void Add(std::unique_ptr<Embedder> embedder);

 private:
  std::map<std::string, std::unique_ptr<Embedder>> by_name_;
};

}  // namespace engram::embed
