// The text corpora of ../shared/data (README there) as benchmarks use them:
// the LaBSE sentences (`language<TAB>sentence` per line) and LoCoMo
// (conversations of dated sessions of turns, and questions with evidence).
// Header-only: benchmarks only. Errors throw std::runtime_error naming the
// file.
#pragma once

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"

namespace engram::bench {

// The sentence column of a LaBSE text file, one per line.
inline std::vector<std::string> ReadSentences(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<std::string> sentences;
  std::string line;
  while (std::getline(in, line)) {
    const size_t tab = line.find('\t');
    sentences.push_back(tab == std::string::npos ? line : line.substr(tab + 1));
  }
  return sentences;
}

struct LocomoTurn {
  std::string conversation;  // sample_id, e.g. "conv-26": the agent
  std::string session;       // "session_3"
  std::string dia_id;        // "D3:7"
  std::string text;          // "Speaker: words" (+ " [image: caption]" when shared)
  int64_t session_time_us = 0;
};

struct LocomoQuestion {
  std::string conversation;
  std::string question;
  std::vector<std::string> evidence;  // dia_ids
  int category = 0;  // 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop, 5 adversarial
};

struct Locomo {
  std::vector<LocomoTurn> turns;
  std::vector<LocomoQuestion> questions;
};

// "1:56 pm on 8 May, 2023" -> microseconds since the epoch (UTC); 0 if the
// format differs.
inline int64_t ParseLocomoTime(const std::string& text) {
  absl::Time time;
  std::string error;
  if (!absl::ParseTime("%I:%M %p on %d %B, %Y", text, absl::UTCTimeZone(), &time, &error)) {
    return 0;
  }
  return absl::ToUnixMicros(time);
}

inline Locomo ReadLocomo(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  const nlohmann::json samples = nlohmann::json::parse(in);
  Locomo locomo;
  for (const nlohmann::json& sample : samples) {
    const std::string conversation = sample.at("sample_id").get<std::string>();
    const nlohmann::json& sessions = sample.at("conversation");
    for (int n = 1;; ++n) {
      const std::string session = absl::StrCat("session_", n);
      if (!sessions.contains(session)) break;
      const int64_t time_us =
          ParseLocomoTime(sessions.value(session + "_date_time", std::string()));
      for (const nlohmann::json& turn : sessions.at(session)) {
        LocomoTurn t{conversation, session, turn.at("dia_id").get<std::string>(),
                     absl::StrCat(turn.at("speaker").get<std::string>(), ": ",
                                  turn.value("text", std::string())),
                     time_us};
        if (turn.contains("blip_caption")) {
          absl::StrAppend(&t.text, " [image: ", turn.at("blip_caption").get<std::string>(), "]");
        }
        locomo.turns.push_back(std::move(t));
      }
    }
    for (const nlohmann::json& qa : sample.at("qa")) {
      LocomoQuestion q{
          conversation, qa.at("question").get<std::string>(), {}, qa.at("category").get<int>()};
      for (const nlohmann::json& evidence : qa.at("evidence")) {
        // A few evidence entries hold several ids ("D8:6; D9:17").
        for (absl::string_view id : absl::StrSplit(evidence.get<std::string>(),
                                                   absl::ByAnyChar("; "), absl::SkipEmpty())) {
          q.evidence.emplace_back(id);
        }
      }
      locomo.questions.push_back(std::move(q));
    }
  }
  return locomo;
}

}  // namespace engram::bench
