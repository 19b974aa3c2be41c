#include "embed/openai_embedder.h"

#include <curl/curl.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"

namespace engram::embed {
namespace {

// Longest Retry-After honoured; a larger one is treated as this.
constexpr absl::Duration kMaxRetryAfter = absl::Seconds(30);
// Characters of an error answer quoted in a message.
constexpr size_t kQuotedBodyChars = 200;

void InitCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// A short, printable excerpt of an answer for an error message, with the
// API key blanked out should the endpoint echo the request's headers.
std::string Excerpt(const std::string& body, const std::string& api_key) {
  std::string message = body;
  nlohmann::json parsed = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_discarded() && parsed.is_object()) {
    auto error = parsed.find("error");
    if (error != parsed.end()) {
      if (error->is_string()) {
        message = error->get<std::string>();
      } else if (error->is_object() && error->contains("message") &&
                 (*error)["message"].is_string()) {
        message = (*error)["message"].get<std::string>();
      }
    }
  }
  if (!api_key.empty()) message = absl::StrReplaceAll(message, {{api_key, "[api key]"}});
  if (message.size() > kQuotedBodyChars) message = message.substr(0, kQuotedBodyChars) + "...";
  for (char& c : message) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return message;
}

std::string Prefix() { return absl::StrCat("embedder '", kOpenAiEmbedder, "': "); }

}  // namespace

struct OpenAiEmbedder::Reply {
  CURLcode transport = CURLE_OK;
  long http_status = 0;
  std::string body;
  bool too_large = false;
  std::optional<absl::Duration> retry_after;
};

namespace {

size_t WriteBody(char* data, size_t size, size_t count, void* user) {
  auto* reply = static_cast<std::pair<std::string*, bool*>*>(user);
  const size_t bytes = size * count;
  if (reply->first->size() + bytes > OpenAiEmbedder::kMaxResponseBytes) {
    *reply->second = true;
    return 0;  // aborts the transfer
  }
  reply->first->append(data, bytes);
  return bytes;
}

size_t ReadHeader(char* data, size_t size, size_t count, void* user) {
  auto* retry_after = static_cast<std::optional<absl::Duration>*>(user);
  absl::string_view line(data, size * count);
  constexpr absl::string_view kName = "retry-after:";
  if (line.size() > kName.size() && absl::EqualsIgnoreCase(line.substr(0, kName.size()), kName)) {
    int seconds = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(kName.size())), &seconds) &&
        seconds >= 0) {
      *retry_after = std::min(absl::Seconds(seconds), kMaxRetryAfter);
    }
  }
  return size * count;
}

}  // namespace

absl::StatusOr<std::vector<std::vector<float>>> ParseEmbeddingsAnswer(const std::string& body,
                                                                      size_t count,
                                                                      uint32_t dimension) {
  auto malformed = [](absl::string_view why) {
    return absl::UnavailableError(absl::StrCat(Prefix(), "malformed answer: ", why));
  };
  nlohmann::json answer = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (answer.is_discarded()) return malformed("not JSON");
  if (!answer.is_object() || !answer.contains("data") || !answer["data"].is_array()) {
    return malformed("no \"data\" array");
  }
  const nlohmann::json& data = answer["data"];
  if (data.size() != count) {
    return malformed(absl::StrCat(data.size(), " vectors for ", count, " texts"));
  }
  std::vector<bool> seen(count, false);
  std::vector<std::vector<float>> vectors(count);
  for (size_t position = 0; position < count; ++position) {
    const nlohmann::json& item = data[position];
    if (!item.is_object() || !item.contains("embedding") || !item["embedding"].is_array()) {
      return malformed(absl::StrCat("item ", position, " has no \"embedding\" array"));
    }
    size_t index = position;
    if (item.contains("index")) {
      if (!item["index"].is_number_unsigned() || item["index"].get<uint64_t>() >= count) {
        return malformed(absl::StrCat("item ", position, " has an invalid \"index\""));
      }
      index = item["index"].get<size_t>();
    }
    if (seen[index]) return malformed(absl::StrCat("index ", index, " appears twice"));
    seen[index] = true;
    const nlohmann::json& embedding = item["embedding"];
    if (embedding.size() != dimension) {
      return absl::UnavailableError(absl::StrCat(Prefix(), "answered vectors of ", embedding.size(),
                                                 " dimensions; the space has ", dimension));
    }
    std::vector<float>& vector = vectors[index];
    vector.resize(dimension);
    for (uint32_t d = 0; d < dimension; ++d) {
      if (!embedding[d].is_number()) {
        return malformed(absl::StrCat("item ", position, " holds a value that is not a number"));
      }
      vector[d] = embedding[d].get<float>();
      if (!std::isfinite(vector[d])) {
        return malformed(absl::StrCat("item ", position, " holds NaN or an infinite value"));
      }
    }
  }
  return vectors;
}

absl::StatusOr<std::unique_ptr<OpenAiEmbedder>> OpenAiEmbedder::Create(
    OpenAiEmbedderOptions options) {
  const std::string url = absl::AsciiStrToLower(options.url);
  if (!absl::StartsWith(url, "http://") && !absl::StartsWith(url, "https://")) {
    return absl::InvalidArgumentError("embedders.openai.url must start with http:// or https://");
  }
  if (options.batch_size == 0) {
    return absl::InvalidArgumentError("embedders.openai.batch_size must be at least 1");
  }
  if (options.timeout_ms < 1 || options.max_retries < 0 || options.retry_backoff_ms < 0) {
    return absl::InvalidArgumentError(
        "embedders.openai.timeout_ms must be at least 1, max_retries and retry_backoff_ms at "
        "least 0");
  }
  std::string api_key;
  if (!options.api_key_env.empty()) {
    const char* value = std::getenv(options.api_key_env.c_str());
    if (value == nullptr || *value == '\0') {
      return absl::InvalidArgumentError(absl::StrCat("embedders.openai.api_key_env names '",
                                                     options.api_key_env,
                                                     "', which is not set or empty"));
    }
    api_key = value;
  } else if (!options.api_key_file.empty()) {
    std::ifstream file(options.api_key_file);
    if (!file || !std::getline(file, api_key) || absl::StripAsciiWhitespace(api_key).empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "embedders.openai.api_key_file '", options.api_key_file, "' cannot be read or is empty"));
    }
    api_key = std::string(absl::StripAsciiWhitespace(api_key));
  }
  InitCurlOnce();
  return std::unique_ptr<OpenAiEmbedder>(
      new OpenAiEmbedder(std::move(options), std::move(api_key)));
}

OpenAiEmbedder::OpenAiEmbedder(OpenAiEmbedderOptions options, std::string api_key)
    : options_(std::move(options)), api_key_(std::move(api_key)) {}

OpenAiEmbedder::~OpenAiEmbedder() {
  absl::MutexLock lock(&handles_mutex_);
  for (void* handle : idle_handles_) curl_easy_cleanup(static_cast<CURL*>(handle));
}

void* OpenAiEmbedder::BorrowHandle() {
  {
    absl::MutexLock lock(&handles_mutex_);
    if (!idle_handles_.empty()) {
      void* handle = idle_handles_.back();
      idle_handles_.pop_back();
      return handle;
    }
  }
  return curl_easy_init();
}

void OpenAiEmbedder::ReturnHandle(void* handle) {
  absl::MutexLock lock(&handles_mutex_);
  idle_handles_.push_back(handle);
}

void OpenAiEmbedder::Post(const std::string& body, absl::Duration timeout, Reply& reply) {
  CURL* curl = static_cast<CURL*>(BorrowHandle());
  if (curl == nullptr) {
    reply.transport = CURLE_FAILED_INIT;
    return;
  }
  curl_easy_reset(curl);
  curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, "Content-Type: application/json");
  headers = curl_slist_append(headers, "Expect:");  // no 100-continue round trip
  std::string authorization;
  if (!api_key_.empty()) {
    authorization = absl::StrCat("Authorization: Bearer ", api_key_);
    headers = curl_slist_append(headers, authorization.c_str());
  }
  const long timeout_ms = std::max<long>(1, absl::ToInt64Milliseconds(timeout));
  std::pair<std::string*, bool*> sink{&reply.body, &reply.too_large};
  curl_easy_setopt(curl, CURLOPT_URL, options_.url.c_str());
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, WriteBody);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, ReadHeader);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &reply.retry_after);
  reply.transport = curl_easy_perform(curl);
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply.http_status);
  curl_slist_free_all(headers);
  // The header list held the key; the handle keeps no copy of it after reset.
  curl_easy_reset(curl);
  ReturnHandle(curl);
}

absl::StatusOr<std::vector<std::vector<float>>> OpenAiEmbedder::Embed(
    const std::vector<std::string>& texts, uint32_t dimension, absl::Time deadline) {
  if (options_.dimension != 0 && options_.dimension != dimension) {
    return absl::UnavailableError(absl::StrCat(Prefix(), "configured for ", options_.dimension,
                                               " dimensions; the space has ", dimension));
  }
  std::vector<std::vector<float>> vectors(texts.size());
  for (size_t begin = 0; begin < texts.size(); begin += options_.batch_size) {
    const size_t end = std::min(texts.size(), begin + size_t{options_.batch_size});
    if (absl::Status s = EmbedBatch(texts, begin, end, dimension, deadline, vectors); !s.ok()) {
      return s;
    }
  }
  return vectors;
}

absl::Status OpenAiEmbedder::EmbedBatch(const std::vector<std::string>& texts, size_t begin,
                                        size_t end, uint32_t dimension, absl::Time deadline,
                                        std::vector<std::vector<float>>& out) {
  nlohmann::json request = nlohmann::json::object();
  if (!options_.model.empty()) request["model"] = options_.model;
  request["input"] = nlohmann::json::array();
  for (size_t i = begin; i < end; ++i) request["input"].push_back(texts[i]);
  request["encoding_format"] = "float";
  // Invalid UTF-8 in a text is sent as U+FFFD rather than failing the call.
  const std::string body = request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);

  const absl::Duration attempt_limit = absl::Milliseconds(options_.timeout_ms);
  absl::Duration backoff = absl::Milliseconds(options_.retry_backoff_ms);
  std::string last_failure;
  for (int attempt = 0; attempt <= options_.max_retries; ++attempt) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(
          absl::StrCat(Prefix(), "the deadline passed",
                       last_failure.empty() ? "" : absl::StrCat(" after ", last_failure)));
    }
    const bool deadline_bound = left < attempt_limit;
    Reply reply;
    Post(body, std::min(left, attempt_limit), reply);

    std::optional<absl::Duration> wait;  // set when the attempt may be retried
    if (reply.too_large) {
      return absl::UnavailableError(
          absl::StrCat(Prefix(), "the answer exceeds ", kMaxResponseBytes >> 20, " MiB"));
    } else if (reply.transport == CURLE_OPERATION_TIMEDOUT && deadline_bound) {
      return absl::DeadlineExceededError(
          absl::StrCat(Prefix(), "no answer before the call's deadline"));
    } else if (reply.transport != CURLE_OK) {
      last_failure = reply.transport == CURLE_OPERATION_TIMEDOUT
                         ? absl::StrCat("no answer within ", options_.timeout_ms, " ms")
                         : curl_easy_strerror(reply.transport);
      wait = backoff;
    } else if (reply.http_status == 429 || reply.http_status >= 500) {
      last_failure =
          absl::StrCat("HTTP ", reply.http_status, " (", Excerpt(reply.body, api_key_), ")");
      wait = reply.retry_after.value_or(backoff);
    } else if (reply.http_status == 400 || reply.http_status == 413 || reply.http_status == 422) {
      return absl::InvalidArgumentError(
          absl::StrCat(Prefix(), "the endpoint refused the input (HTTP ", reply.http_status,
                       "): ", Excerpt(reply.body, api_key_)));
    } else if (reply.http_status != 200) {
      return absl::UnavailableError(absl::StrCat(
          Prefix(), "HTTP ", reply.http_status,
          reply.http_status == 401 || reply.http_status == 403 ? " (check the API key)" : "", ": ",
          Excerpt(reply.body, api_key_)));
    }
    if (wait.has_value()) {
      if (attempt == options_.max_retries) break;
      if (absl::Now() + *wait >= deadline) {
        return absl::DeadlineExceededError(
            absl::StrCat(Prefix(), "the deadline leaves no time to retry after ", last_failure));
      }
      absl::SleepFor(*wait);
      backoff *= 2;
      continue;
    }
    absl::StatusOr<std::vector<std::vector<float>>> vectors =
        ParseEmbeddingsAnswer(reply.body, end - begin, dimension);
    if (!vectors.ok()) return vectors.status();
    for (size_t i = begin; i < end; ++i) out[i] = std::move((*vectors)[i - begin]);
    return absl::OkStatus();
  }
  return absl::UnavailableError(
      absl::StrCat(Prefix(), last_failure, " after ", options_.max_retries + 1, " attempts"));
}

}  // namespace engram::embed
