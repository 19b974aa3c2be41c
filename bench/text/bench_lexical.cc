// bench_lexical: Engram's lexical index (BM25 postings in RocksDB,
// storage/lexical_index.h) beside Xapian 1.4 (BM25 weighting), both built
// and queried in this process from the same tokens.
//
// For each corpus (the LaBSE sentences, 59,059 in many languages, queried
// with the 1,000 query sentences and with 1,000 base sentences; the LoCoMo
// turns, queried with its 1,986 questions) it writes every document to both
// in batches of --batch, each batch made durable (a synced WriteBatch; a
// Xapian commit), tokenizing with Engram's tokenizer in both; reports write
// throughput and index size (Engram: the postings column family's SST bytes
// after a full compaction; Xapian: its database directory); then runs each
// query set single-threaded, top --k, for at least --seconds, and reports
// queries per second and how many of Xapian's top k Engram also returned.
// Both engines score BM25 with k1 = 1.2 and b = 0.75 but their idf and
// length formulas differ a little, so the overlap is near, not at, 100%;
// the exact-agreement check against an independent BM25 lives in the tests.
//
// Output: a human table on stderr; with --json one JSON object per line.
#include <xapian.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "bench/common/text_corpora.h"
#include "storage/episode_store.h"
#include "text/tokenizer.h"

namespace engram::bench {
namespace {

constexpr char kTenant[] = "bench";
constexpr char kSpace[] = "text";

struct Corpus {
  std::string name;
  std::vector<std::string> documents;
  std::vector<std::string> agents;                                           // per document
  std::vector<std::pair<std::string, std::vector<std::string>>> query_sets;  // name -> texts
};

struct Options {
  std::string data_dir = "../shared/data";
  std::string work_dir;
  std::vector<std::string> corpora = {"labse", "locomo"};
  std::string stem;
  uint32_t k = 10;
  size_t batch = 512;
  double seconds = 2;
  bool json = false;
};

uint64_t DirectoryBytes(const std::string& dir) {
  uint64_t total = 0;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) total += entry.file_size();
  }
  return total;
}

std::vector<std::string> DistinctTerms(const text::Tokenizer& tokenizer, const std::string& text) {
  std::vector<std::string> terms = tokenizer.Tokenize(text);
  std::sort(terms.begin(), terms.end());
  terms.erase(std::unique(terms.begin(), terms.end()), terms.end());
  return terms;
}

Corpus LoadCorpus(const std::string& name, const Options& options) {
  Corpus corpus{name, {}, {}, {}};
  if (name == "labse") {
    corpus.documents = ReadSentences(options.data_dir + "/labse_base_text.tsv");
    corpus.agents.assign(corpus.documents.size(), "agent");
    corpus.query_sets.emplace_back("labse_query",
                                   ReadSentences(options.data_dir + "/labse_query_text.tsv"));
    std::vector<std::string> sampled;
    for (size_t i = 0; i < corpus.documents.size() && sampled.size() < 1000; i += 59) {
      sampled.push_back(corpus.documents[i]);
    }
    corpus.query_sets.emplace_back("labse_base_sample", std::move(sampled));
  } else if (name == "locomo") {
    Locomo locomo = ReadLocomo(options.data_dir + "/locomo10.json");
    for (LocomoTurn& turn : locomo.turns) {
      corpus.documents.push_back(std::move(turn.text));
      corpus.agents.push_back(std::move(turn.conversation));
    }
    std::vector<std::string> questions;
    for (const LocomoQuestion& q : locomo.questions) questions.push_back(q.question);
    corpus.query_sets.emplace_back("locomo_questions", std::move(questions));
  } else {
    throw std::runtime_error("unknown corpus " + name);
  }
  return corpus;
}

struct Measurement {
  std::string system, corpus, query_set;
  double write_docs_per_s = 0;
  uint64_t index_bytes = 0;
  double qps = 0;
  double overlap_with_xapian = 0;  // Engram's rows only
  size_t queries = 0;
};

// Runs `search` over the queries, round after round, until `seconds` have
// passed (at least one round); returns queries per second.
template <typename Search>
double MeasureQps(size_t queries, double seconds, Search&& search) {
  const absl::Time start = absl::Now();
  size_t done = 0;
  do {
    for (size_t q = 0; q < queries; ++q) search(q);
    done += queries;
  } while (absl::ToDoubleSeconds(absl::Now() - start) < seconds);
  return done / absl::ToDoubleSeconds(absl::Now() - start);
}

std::vector<Measurement> RunCorpus(const Corpus& corpus, const Options& options) {
  const std::string root = options.work_dir + "/" + corpus.name;
  std::filesystem::remove_all(root);
  std::vector<Measurement> rows;

  // Engram: the store, exactly as engramd opens it (synced writes).
  storage::StoreOptions store_options;
  store_options.data_dir = root + "/engram";
  auto store = storage::EpisodeStore::Open(store_options);
  if (!store.ok()) throw std::runtime_error(store.status().ToString());
  SpaceInfo space{.name = kSpace, .dimension = 1};
  space.text.stem_language = options.stem;
  if (auto created = (*store)->CreateSpace(kTenant, space); !created.ok()) {
    throw std::runtime_error(created.status().ToString());
  }
  absl::Time start = absl::Now();
  for (size_t begin = 0; begin < corpus.documents.size(); begin += options.batch) {
    std::vector<EpisodeWrite> writes;
    for (size_t i = begin; i < std::min(begin + options.batch, corpus.documents.size()); ++i) {
      EpisodeWrite write;
      write.episode.agent_id = corpus.agents[i];
      write.episode.text = corpus.documents[i];
      write.episode.embedding = {1.0f};
      writes.push_back(std::move(write));
    }
    if (auto put = (*store)->PutEpisodes(kTenant, kSpace, std::move(writes)); !put.ok()) {
      throw std::runtime_error(put.status().ToString());
    }
  }
  const double engram_write = corpus.documents.size() / absl::ToDoubleSeconds(absl::Now() - start);
  std::atomic<bool> cancel{false};
  if (auto compacted = (*store)->Compact([](double, const std::string&) {}, &cancel);
      !compacted.ok()) {
    throw std::runtime_error(compacted.ToString());
  }
  uint64_t engram_bytes = 0;
  for (const storage::ColumnFamilyStats& cf : (*store)->ColumnFamilies()) {
    if (cf.name == "postings") engram_bytes = cf.sst_bytes;
  }

  // Xapian, fed the same tokens.
  auto tokenizer = text::Tokenizer::Create({options.stem});
  if (!tokenizer.ok()) throw std::runtime_error(tokenizer.status().ToString());
  const std::string xapian_dir = root + "/xapian";
  start = absl::Now();
  {
    Xapian::WritableDatabase db(xapian_dir, Xapian::DB_CREATE_OR_OVERWRITE);
    std::vector<std::string> terms;
    for (size_t i = 0; i < corpus.documents.size(); ++i) {
      Xapian::Document document;
      terms.clear();
      (*tokenizer)->Tokenize(corpus.documents[i], terms);
      for (const std::string& term : terms) document.add_term(term);
      db.add_document(document);
      if ((i + 1) % options.batch == 0) db.commit();
    }
    db.commit();
  }
  const double xapian_write = corpus.documents.size() / absl::ToDoubleSeconds(absl::Now() - start);
  const uint64_t xapian_bytes = DirectoryBytes(xapian_dir);
  Xapian::Database xapian(xapian_dir);
  Xapian::Enquire enquire(xapian);
  enquire.set_weighting_scheme(Xapian::BM25Weight(1.2, 0, 1, 0.75, 0));

  for (const auto& [set_name, texts] : corpus.query_sets) {
    std::vector<std::vector<std::string>> queries;
    for (const std::string& text : texts) queries.push_back(DistinctTerms(**tokenizer, text));
    // Top-k of each, once, for the overlap.
    std::vector<std::set<uint64_t>> xapian_top(queries.size());
    auto xapian_search = [&](size_t q) {
      enquire.set_query(Xapian::Query(Xapian::Query::OP_OR, queries[q].begin(), queries[q].end()));
      return enquire.get_mset(0, options.k);
    };
    storage::LexicalQuery query;
    query.limit = options.k;
    auto engram_search = [&](size_t q) {
      query.terms = queries[q];
      auto result = (*store)->SearchText(kTenant, kSpace, query);
      if (!result.ok()) throw std::runtime_error(result.status().ToString());
      return *std::move(result);
    };
    double overlap = 0;
    for (size_t q = 0; q < queries.size(); ++q) {
      // Xapian numbers documents from 1 in insertion order; Engram's ids
      // also count up from 1 in a fresh store.
      Xapian::MSet mset = xapian_search(q);
      std::set<uint64_t> expected;
      for (auto it = mset.begin(); it != mset.end(); ++it) expected.insert(*it);
      size_t shared = 0;
      for (const storage::LexicalHit& hit : engram_search(q).hits) shared += expected.count(hit.id);
      overlap += expected.empty() ? 1.0 : static_cast<double>(shared) / expected.size();
    }
    overlap /= queries.size();
    const double engram_qps = MeasureQps(queries.size(), options.seconds, engram_search);
    const double xapian_qps = MeasureQps(queries.size(), options.seconds, xapian_search);
    rows.push_back({"engram", corpus.name, set_name, engram_write, engram_bytes, engram_qps,
                    overlap, queries.size()});
    rows.push_back({"xapian", corpus.name, set_name, xapian_write, xapian_bytes, xapian_qps, 0,
                    queries.size()});
  }
  return rows;
}

int Main(int argc, char** argv) {
  Options options;
  CLI::App app("Engram's lexical index beside Xapian (BM25), same tokens, in one process");
  app.add_option("--data-dir", options.data_dir, "../shared/data");
  app.add_option("--work-dir", options.work_dir,
                 "where both indexes are built (default: a temp dir)");
  app.add_option("--corpus", options.corpora, "labse and/or locomo");
  app.add_option("--stem", options.stem, "Snowball stemming language for both (default: none)");
  app.add_option("--k", options.k, "hits per query");
  app.add_option("--batch", options.batch, "documents per durable write batch");
  app.add_option("--seconds", options.seconds, "minimum time per query measurement");
  app.add_flag("--json", options.json, "print one JSON object per measurement on stdout");
  CLI11_PARSE(app, argc, argv);
  if (options.work_dir.empty()) {
    options.work_dir = (std::filesystem::temp_directory_path() / "engram-bench-lexical").string();
  }
  absl::FPrintF(stderr, "%-7s %-7s %-18s %8s %12s %10s %10s %9s\n", "system", "corpus", "queries",
                "queries", "write doc/s", "index MiB", "QPS", "overlap");
  for (const std::string& name : options.corpora) {
    const Corpus corpus = LoadCorpus(name, options);
    for (const Measurement& m : RunCorpus(corpus, options)) {
      absl::FPrintF(stderr, "%-7s %-7s %-18s %8d %12.0f %10.2f %10.0f %9s\n", m.system, m.corpus,
                    m.query_set, m.queries, m.write_docs_per_s, m.index_bytes / 1048576.0, m.qps,
                    m.system == "engram" ? absl::StrFormat("%.3f", m.overlap_with_xapian) : "-");
      if (options.json) {
        nlohmann::json line = {{"bench", "lexical"},
                               {"system", m.system},
                               {"corpus", m.corpus},
                               {"query_set", m.query_set},
                               {"documents", corpus.documents.size()},
                               {"queries", m.queries},
                               {"k", options.k},
                               {"stem", options.stem},
                               {"batch", options.batch},
                               {"write_docs_per_s", m.write_docs_per_s},
                               {"index_bytes", m.index_bytes},
                               {"qps", m.qps}};
        if (m.system == "engram") line["top_k_overlap_with_xapian"] = m.overlap_with_xapian;
        std::cout << line.dump() << std::endl;
      }
    }
  }
  std::filesystem::remove_all(options.work_dir);
  return 0;
}

}  // namespace
}  // namespace engram::bench

int main(int argc, char** argv) { return engram::bench::Main(argc, argv); }
