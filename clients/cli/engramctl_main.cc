// engramctl: Engram's admin and quick-use command line. Talks to engramd
// through the C++ client library; prints results as JSON (one object per
// line), errors as "engramctl: CODE: message" on stderr with exit code 1.
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "clients/cli/completion.h"
#include "clients/cli/output.h"
#include "clients/cpp/engram_client.h"
#include "common/version.h"
#include "server/auth/tokens.h"

namespace {

using engram::client::Client;
namespace v1 = engram::v1;

// A search's explanation for people: the route, the gate's verdict and
// signals, the stages, and each hit with the lists that proposed it.
std::string ExplainSearch(const v1::SearchResponse& response) {
  std::string out = absl::StrFormat("route %s (asked: %s), %d hits\n", response.route(),
                                    response.policy(), response.hits_size());
  if (response.has_gate()) {
    const v1::GateDecision& gate = response.gate();
    absl::StrAppendFormat(&out, "gate: %s (%d us)\n", gate.reason(), gate.micros());
    absl::StrAppendFormat(&out, "  %-20s %10s %8s %13s\n", "signal", "value", "weight",
                          "contribution");
    for (const v1::GateSignal& signal : gate.signals()) {
      absl::StrAppendFormat(&out, "  %-20s %10.4f %8.3f %+13.4f\n", signal.name(), signal.value(),
                            signal.weight(), signal.contribution());
    }
  }
  absl::StrAppendFormat(&out, "stages:\n  %-10s %10s %8s %10s %12s  %s\n", "stage", "in", "out",
                        "us", "budget us", "note");
  for (const v1::SearchStage& stage : response.stages()) {
    absl::StrAppendFormat(
        &out, "  %-10s %10d %8s %10d %12s  %s\n", stage.name(), stage.candidates(),
        stage.kept() ? absl::StrCat(stage.kept()) : std::string("-"), stage.micros(),
        stage.budget_micros() ? absl::StrCat(stage.budget_micros()) : std::string("-"),
        stage.note());
  }
  out += "hits:\n";
  for (int i = 0; i < response.hits_size(); ++i) {
    const v1::SearchHit& hit = response.hits(i);
    std::string sources;
    for (const v1::SourceRank& source : hit.sources()) {
      absl::StrAppendFormat(&sources, " %s#%d(%.4g)", source.source(), source.rank(),
                            source.score());
    }
    std::string text = hit.episode().text();
    if (text.size() > 60) text = text.substr(0, 57) + "...";
    absl::StrAppendFormat(&out, "  %2d. id %d score %.6g%s%s  %s\n", i + 1, hit.episode().id(),
                          hit.score(), sources.empty() ? "" : " from", sources, text);
  }
  return out;
}

// Where results go: JSON lines or a table (--output), set up by main.
engram::cli::Output* g_output = nullptr;

void PrintJson(const google::protobuf::Message& message) { g_output->Add(message); }
void PrintJson(const nlohmann::ordered_json& row) { g_output->Add(row); }

// One line of `doctor`'s report: check, ok, detail and, when it failed, fix.
void PrintCheck(const std::string& check, bool ok, const std::string& detail,
                const std::string& fix = "") {
  nlohmann::ordered_json line = {{"check", check}, {"ok", ok}, {"detail", detail}};
  if (!ok && !fix.empty()) line["fix"] = fix;
  PrintJson(line);
}

// "major.minor" of a semantic version.
std::string MajorMinor(const std::string& version) {
  std::vector<std::string> parts = absl::StrSplit(version, '.');
  return parts.size() >= 2 ? absl::StrCat(parts[0], ".", parts[1]) : version;
}

// Checks, in order, what a call to engramd needs, and says what to fix:
// reaching the address, health, credentials, and version agreement. Exit
// status 1 when a check fails.
int Doctor(engram::client::Client& client, const engram::client::ClientOptions& options) {
  const bool connected = client.WaitForConnected(absl::Seconds(5));
  PrintCheck("connect", connected, absl::StrCat("engramd at ", options.address),
             absl::StrCat("start engramd (./run.sh) or point --address / ENGRAM_ADDRESS at it; "
                          "a TLS listener needs --tls (and --tls-ca for a private CA)"));
  if (!connected) return 1;
  absl::Status health = client.CheckHealth();
  PrintCheck("health", health.ok(), health.ok() ? "SERVING" : std::string(health.message()),
             "engramd is starting (loading the store and index) or shutting down; retry "
             "shortly, and read its log");
  absl::StatusOr<engram::v1::ServerInfoResponse> info = client.ServerInfo();
  if (!info.ok()) {
    std::string fix = "see the message";
    if (absl::IsUnauthenticated(info.status())) {
      fix = "engramd requires a token: set ENGRAM_TOKEN or --token (engramctl token create)";
    } else if (absl::IsPermissionDenied(info.status())) {
      fix = "the token lacks the read role; create one with --role read or higher";
    } else if (absl::IsUnavailable(info.status())) {
      fix =
          "check TLS: --tls-ca must hold the CA of engramd's certificate, and "
          "--tls-server-name the name it carries";
    }
    PrintCheck("credentials", false, std::string(info.status().message()), fix);
    return 1;
  }
  PrintCheck("credentials", true,
             !info->auth()           ? "engramd has auth off: any caller is the default tenant"
             : options.token.empty() ? "no token sent, and none needed for this call"
                                     : "token accepted");
  const bool same =
      MajorMinor(info->version()) == MajorMinor(engram::kVersion) && info->api() == engram::kApi;
  PrintCheck("version", same,
             absl::StrCat("engramd ", info->version(), " (", info->api(), "), engramctl ",
                          engram::kVersion, " (", engram::kApi, ")"),
             "use an engramctl of engramd's release; within engram.v1 calls stay compatible, "
             "but newer fields may be missing");
  PrintCheck("scans", true, info->scan_backend_reason());
  return same && health.ok() ? 0 : 1;
}

int Fail(const absl::Status& status) {
  std::cerr << "engramctl: " << absl::StatusCodeToString(status.code()) << ": " << status.message()
            << "\n";
  return 1;
}

// "0.1, 0.2 0.3" or "[0.1,0.2,0.3]" -> floats.
absl::StatusOr<std::vector<float>> ParseVector(std::string_view text) {
  std::string cleaned(text);
  for (char& c : cleaned) {
    if (c == '[' || c == ']' || c == ',' || c == '\t' || c == '\n') c = ' ';
  }
  std::vector<float> values;
  for (absl::string_view token : absl::StrSplit(cleaned, ' ', absl::SkipEmpty())) {
    float value;
    if (!absl::SimpleAtof(token, &value) || !std::isfinite(value)) {
      return absl::InvalidArgumentError(
          std::string("vector value '").append(token.data(), token.size()) + "' is not a number");
    }
    values.push_back(value);
  }
  if (values.empty()) return absl::InvalidArgumentError("the vector is empty");
  return values;
}

// Vectors from --vector, or one per line from --vector-file ("-" is stdin).
absl::StatusOr<std::vector<std::vector<float>>> ReadVectors(const std::string& inline_vector,
                                                            const std::string& file) {
  std::vector<std::vector<float>> vectors;
  if (!inline_vector.empty()) {
    absl::StatusOr<std::vector<float>> v = ParseVector(inline_vector);
    if (!v.ok()) return v.status();
    vectors.push_back(*std::move(v));
    return vectors;
  }
  if (file.empty()) return absl::InvalidArgumentError("give --vector or --vector-file");
  std::ifstream input;
  if (file != "-") {
    input.open(file);
    if (!input) return absl::NotFoundError("cannot read vector file '" + file + "'");
  }
  std::istream& in = file == "-" ? std::cin : input;
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    absl::StatusOr<std::vector<float>> v = ParseVector(line);
    if (!v.ok()) return v.status();
    vectors.push_back(*std::move(v));
  }
  if (vectors.empty()) return absl::InvalidArgumentError("no vectors in '" + file + "'");
  return vectors;
}

absl::StatusOr<v1::Metric> ParseMetric(const std::string& name) {
  if (name == "cosine") return v1::METRIC_COSINE;
  if (name == "ip" || name == "inner_product") return v1::METRIC_INNER_PRODUCT;
  if (name == "l2") return v1::METRIC_L2;
  return absl::InvalidArgumentError("metric '" + name + "' is not cosine, ip or l2");
}

// "key=value": value typed as int, double, true/false, else string.
absl::Status ParseMetadata(const std::vector<std::string>& entries, v1::Episode* episode) {
  for (const std::string& entry : entries) {
    std::vector<std::string> parts = absl::StrSplit(entry, absl::MaxSplits('=', 1));
    if (parts.size() != 2 || parts[0].empty()) {
      return absl::InvalidArgumentError("metadata '" + entry + "' is not key=value");
    }
    v1::MetadataValue& value = (*episode->mutable_metadata())[parts[0]];
    int64_t i;
    double d;
    if (absl::SimpleAtoi(parts[1], &i)) {
      value.set_int_value(i);
    } else if (absl::SimpleAtod(parts[1], &d)) {
      value.set_double_value(d);
    } else if (parts[1] == "true" || parts[1] == "false") {
      value.set_bool_value(parts[1] == "true");
    } else {
      value.set_string_value(parts[1]);
    }
  }
  return absl::OkStatus();
}

void DrawProgress(double fraction, const std::string& stage) {
  constexpr int kWidth = 30;
  int filled = static_cast<int>(fraction * kWidth + 0.5);
  std::cerr << "\r[" << std::string(filled, '#') << std::string(kWidth - filled, '-') << "] "
            << static_cast<int>(fraction * 100 + 0.5) << "% " << stage << "\033[K" << std::flush;
}

// `engramctl token ...`: `subject` is the token id (revoke) or the
// certificate's common name (map-cert, unmap-cert).
int RunTokenCommand(const std::string& command, const std::string& path, const std::string& scope,
                    const std::string& role_name, const std::string& label,
                    const std::string& subject) {
  namespace auth = engram::auth;
  absl::StatusOr<auth::TokensFile> file = auth::LoadTokensFile(path);
  if (absl::IsNotFound(file.status()) && (command == "create" || command == "map-cert")) {
    file = auth::TokensFile();
  }
  if (!file.ok()) return Fail(file.status());
  const std::optional<auth::Role> role = auth::ParseRole(role_name);
  const int64_t now_s = absl::ToUnixSeconds(absl::Now());
  if (command == "list") {
    for (const auth::TokenRecord& t : file->tokens) {
      std::cout << "token " << t.id << " scope=" << t.scope << " role=" << auth::RoleName(t.role)
                << " created="
                << absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", absl::FromUnixSeconds(t.created_s),
                                    absl::UTCTimeZone())
                << (t.label.empty() ? "" : " label=\"" + t.label + "\"") << "\n";
    }
    for (const auth::CertMapping& c : file->certs) {
      std::cout << "cert " << c.common_name << " scope=" << c.scope
                << " role=" << auth::RoleName(c.role)
                << (c.label.empty() ? "" : " label=\"" + c.label + "\"") << "\n";
    }
    return 0;
  }
  if ((command == "create" || command == "map-cert") && !role) {
    return Fail(absl::InvalidArgumentError("--role must be read, write or admin"));
  }
  if ((command == "create" || command == "map-cert") && scope.empty()) {
    return Fail(absl::InvalidArgumentError("give --tenant NAME or --operator"));
  }
  if (command == "create") {
    absl::StatusOr<auth::NewToken> created = auth::CreateToken(scope, *role, label, now_s);
    if (!created.ok()) return Fail(created.status());
    file->tokens.push_back(created->record);
    if (absl::Status saved = auth::SaveTokensFile(path, *file); !saved.ok()) return Fail(saved);
    std::cerr << "token " << created->record.id << " for scope " << scope << " with role "
              << auth::RoleName(*role)
              << "; store it now, it is not shown again. Send engramd SIGHUP to load it.\n";
    std::cout << created->token << "\n";
    return 0;
  }
  if (command == "revoke") {
    auto& tokens = file->tokens;
    auto found = std::find_if(tokens.begin(), tokens.end(),
                              [&](const auth::TokenRecord& t) { return t.id == subject; });
    if (found == tokens.end()) {
      return Fail(absl::NotFoundError(absl::StrCat("no token with id '", subject, "'")));
    }
    tokens.erase(found);
  } else if (command == "map-cert") {
    if (subject.empty() || subject.find_first_of(" \t\r\n") != std::string::npos) {
      return Fail(absl::InvalidArgumentError("the common name must be non-empty, without spaces"));
    }
    if (!auth::ValidScope(scope)) {
      return Fail(absl::InvalidArgumentError(absl::StrCat("'", scope, "' is not a tenant name")));
    }
    for (const auth::CertMapping& c : file->certs) {
      if (c.common_name == subject) {
        return Fail(absl::AlreadyExistsError(absl::StrCat("'", subject, "' is already mapped")));
      }
    }
    file->certs.push_back({subject, scope, *role, now_s, label});
  } else {
    auto& certs = file->certs;
    auto found = std::find_if(certs.begin(), certs.end(),
                              [&](const auth::CertMapping& c) { return c.common_name == subject; });
    if (found == certs.end()) {
      return Fail(absl::NotFoundError(absl::StrCat("no mapping for '", subject, "'")));
    }
    certs.erase(found);
  }
  if (absl::Status saved = auth::SaveTokensFile(path, *file); !saved.ok()) return Fail(saved);
  std::cerr << "saved " << path << "; send engramd SIGHUP to apply it\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"engramctl: manage and query an engramd server"};
  app.require_subcommand(1);
  std::string output_format = isatty(STDOUT_FILENO) ? "table" : "json";
  app.add_option("-o,--output", output_format,
                 "json (one object per line) or table; default: table on a terminal, else json")
      ->check(CLI::IsMember({"json", "table"}));
  app.set_version_flag("--version", absl::StrCat("engramctl ", engram::kVersion, " (",
                                                 engram::kBuild, "; ", engram::kApi, ")"));
  engram::client::ClientOptions options;
  double timeout_s = 30;
  app.add_option("-a,--address", options.address, "engramd host:port")
      ->capture_default_str()
      ->envname("ENGRAM_ADDRESS");
  app.add_option("--timeout", timeout_s, "seconds per call")->capture_default_str();
  app.add_option("--token", options.token, "bearer token (engramctl token create)")
      ->envname("ENGRAM_TOKEN");
  std::string tls_ca, tls_cert, tls_key;
  bool use_tls = false;
  app.add_flag("--tls", use_tls, "connect with TLS (implied by --tls-ca and --tls-cert)");
  app.add_option("--tls-ca", tls_ca, "PEM CA bundle to verify engramd with (default: system roots)")
      ->envname("ENGRAM_TLS_CA");
  app.add_option("--tls-cert", tls_cert, "PEM client certificate (mTLS)")
      ->envname("ENGRAM_TLS_CERT");
  app.add_option("--tls-key", tls_key, "PEM key of --tls-cert")->envname("ENGRAM_TLS_KEY");
  app.add_option("--tls-server-name", options.tls_server_name,
                 "name engramd's certificate must carry, if not the address's host");

  // Shared option values (each subcommand binds the ones it needs).
  std::string space, agent, session, kind, text, vector, vector_file, request_id, metric = "cosine",
                                                                                  name, key;
  std::vector<std::string> metadata, kinds, keys;
  uint32_t dimension = 0, k = 10, page_size = 100, backup_id = 0;
  uint64_t id = 0;
  std::vector<uint64_t> ids;
  bool include_embedding = false, all_pages = false;

  auto* space_cmd = app.add_subcommand("space", "create, get, list or delete spaces");
  space_cmd->require_subcommand(1);
  auto* space_create = space_cmd->add_subcommand("create", "create a space");
  space_create->add_option("name", name, "space name")->required();
  space_create->add_option("--dim", dimension,
                           "embedding dimension (required unless --embedder gives it)");
  space_create->add_option("--metric", metric, "cosine, ip or l2")->capture_default_str();
  std::string stem_language;
  space_create->add_option("--stem", stem_language,
                           "Snowball stemming for the text index (english, german, ...)");
  std::string embedder;
  space_create->add_option("--embedder", embedder,
                           "static or openai: engramd embeds text-only episodes and queries");
  auto* space_get = space_cmd->add_subcommand("get", "show a space");
  space_get->add_option("name", name)->required();
  auto* space_list = space_cmd->add_subcommand("list", "list spaces");
  auto* space_delete = space_cmd->add_subcommand("delete", "delete a space and its episodes");
  space_delete->add_option("name", name)->required();

  auto* put = app.add_subcommand(
      "put", "store one episode per vector (one batch), or --text alone in a space that embeds");
  put->add_option("-s,--space", space)->required();
  put->add_option("--agent", agent)->required();
  put->add_option("--session", session);
  put->add_option("--kind", kind);
  put->add_option("--text", text);
  put->add_option("--vector", vector, "comma/space separated floats");
  put->add_option("--vector-file", vector_file, "one vector per line; - for stdin");
  put->add_option("--request-id", request_id, "idempotency key (single vector only)");
  put->add_option(
      "--key", key,
      "the agent's key for the episode: replaces the one it names (single vector only)");
  put->add_option("--meta", metadata, "key=value metadata (repeatable)");

  auto* get = app.add_subcommand("get", "show an episode, by id or by --agent and --key");
  get->add_option("-s,--space", space)->required();
  auto* get_id = get->add_option("id", id);
  auto* get_key = get->add_option("--key", key, "the episode's key (with --agent)");
  get->add_option("--agent", agent);
  get_id->excludes(get_key);

  auto* agents = app.add_subcommand("agents", "list the agents holding episodes in a space");
  agents->add_option("-s,--space", space)->required();

  auto* history = app.add_subcommand("history", "show every version of an episode");
  history->add_option("-s,--space", space)->required();
  history->add_option("id", id)->required();

  auto* list = app.add_subcommand("list", "list episodes");
  list->add_option("-s,--space", space)->required();
  list->add_option("--agent", agent);
  list->add_option("--session", session);
  list->add_option("--kind", kinds, "repeatable");
  list->add_option("--page-size", page_size)->capture_default_str();
  list->add_flag("--all", all_pages, "follow page tokens to the end");
  list->add_flag("--embedding", include_embedding, "include embeddings");

  auto* search = app.add_subcommand(
      "search", "best episodes for a query vector, words (BM25), or both (hybrid)");
  search->add_option("-s,--space", space)->required();
  search->add_option("--text", text, "words to search for by BM25");
  search->add_option("--vector", vector);
  search->add_option("--vector-file", vector_file, "first line is the query; - for stdin");
  search->add_option("-k", k)->capture_default_str();
  search->add_option("--agent", agent);
  search->add_option("--session", session);
  uint32_t beam_width = 0;
  bool exact = false;
  search->add_option("--beam-width", beam_width, "graph beam width L (0: calibrated default)");
  search->add_flag("--exact", exact, "score every episode exactly instead of using the index");
  bool scan = false;
  search->add_flag("--scan", scan,
                   "scan every vector in memory (GPU when engramd has one) instead of the graph");
  std::string route = "auto";
  search
      ->add_option("--route", route,
                   "auto: the fast path, deliberation when the quality gate escalates; fast; "
                   "deliberate")
      ->check(CLI::IsMember({"auto", "fast", "deliberate"}))
      ->capture_default_str();
  bool explain = false;
  search->add_flag("--explain", explain,
                   "print how the answer was found (route, the gate's signals, stages, each "
                   "hit's sources) as text instead of JSON");

  auto* analyze = app.add_subcommand("analyze", "show the terms a text becomes in a space's index");
  analyze->add_option("-s,--space", space)->required();
  analyze->add_option("text", text)->required();
  bool embed_text = false;
  analyze->add_flag("--embed", embed_text, "also show the vector the space's embedder makes");

  auto* remove = app.add_subcommand("delete", "delete episodes by ids, agent, session or keys");
  remove->add_option("-s,--space", space)->required();
  remove->add_option("--ids", ids)->delimiter(',');
  remove->add_option("--keys", keys, "the agent's keys (with --agent)")->delimiter(',');
  remove->add_option("--agent", agent);
  remove->add_option("--session", session);

  auto* stats = app.add_subcommand("stats", "server and storage statistics");
  auto* compact = app.add_subcommand("compact", "compact the database (Ctrl-C cancels)");
  auto* checkpoint = app.add_subcommand("checkpoint", "create a checkpoint");
  checkpoint->add_option("name", name, "directory name under the server's checkpoint_dir")
      ->required();
  auto* backup = app.add_subcommand("backup", "create, list, verify and restore backups");
  backup->require_subcommand(1);
  auto* backup_create = backup->add_subcommand("create", "back up the live database");
  auto* backup_list = backup->add_subcommand("list", "list backups");
  auto* backup_verify = backup->add_subcommand("verify", "check a backup's files and checksums");
  backup_verify->add_option("id", backup_id)->required();
  auto* backup_restore = backup->add_subcommand(
      "restore", "restore a backup into a new directory under the server's restore_dir");
  backup_restore->add_option("name", name)->required();
  backup_restore->add_option("--id", backup_id, "backup id (default: latest)");
  auto* health = app.add_subcommand("health", "exit 0 when the server is SERVING");
  auto* version = app.add_subcommand("version", "engramctl's and engramd's versions");
  auto* doctor = app.add_subcommand(
      "doctor", "check the address, health, credentials and versions, and say what to fix");
  auto* index_cmd = app.add_subcommand("index", "vector index statistics and rebuilds");
  index_cmd->require_subcommand(1);
  auto* index_stats = index_cmd->add_subcommand(
      "stats", "one line per partition: first stage, calibrated beam width, sample recall, bytes");
  auto* index_rebuild = index_cmd->add_subcommand(
      "rebuild", "rebuild a space's index from its episodes (searches continue meanwhile)");
  index_rebuild->add_option("-s,--space", space)->required();
  std::string model_id, path;
  auto* kv_cmd = app.add_subcommand("kv", "agents' KV caches: list, stats, export, import, delete");
  kv_cmd->require_subcommand(1);
  auto* kv_list = kv_cmd->add_subcommand("list", "one line per cache (of one agent with --agent)");
  kv_list->add_option("--agent", agent, "only this agent's caches");
  auto* kv_stats = kv_cmd->add_subcommand("stats", "stored blocks, bytes and the RAM pool");
  auto* kv_export = kv_cmd->add_subcommand(
      "export", "write a cache as a safetensors file (path inside the server's kv.export_dir)");
  kv_export->add_option("--agent", agent)->required();
  kv_export->add_option("--model", model_id)->required();
  kv_export->add_option("path", path, "file path relative to kv.export_dir")->required();
  auto* kv_import = kv_cmd->add_subcommand(
      "import", "store a safetensors cache file (path inside the server's kv.export_dir)");
  kv_import->add_option("path", path, "file path relative to kv.export_dir")->required();
  kv_import->add_option("--agent", agent, "store it for this agent (default: the file's agent_id)");
  auto* kv_delete = kv_cmd->add_subcommand("delete", "delete an agent's caches (evict them)");
  kv_delete->add_option("--agent", agent)->required();
  kv_delete->add_option("--model", model_id, "only this model's cache");

  // Offline: edits the tokens file engramd reads (SIGHUP it afterwards).
  std::string tokens_file, tenant, role_name = "read", label, common_name;
  bool operator_scope = false;
  auto* token_cmd = app.add_subcommand(
      "token", "manage engramd's tokens file offline (then send engramd SIGHUP)");
  token_cmd->require_subcommand(1);
  token_cmd->add_option("--file", tokens_file, "the tokens file (auth.tokens_file)")
      ->required()
      ->envname("ENGRAM_TOKENS_FILE");
  auto* token_create = token_cmd->add_subcommand(
      "create", "make a token and print it (once: only its hash is kept)");
  auto* token_scope = token_create->add_option("--tenant", tenant, "the tenant it acts for");
  token_create
      ->add_flag("--operator", operator_scope,
                 "a whole-server token (backups, compaction; no tenant's data)")
      ->excludes(token_scope);
  token_create->add_option("--role", role_name, "read, write or admin")->capture_default_str();
  token_create->add_option("--label", label, "a note for people (who or what holds it)");
  auto* token_list = token_cmd->add_subcommand("list", "tokens and certificate mappings");
  auto* token_revoke = token_cmd->add_subcommand("revoke", "delete a token by its id");
  token_revoke->add_option("id", name, "the token's id (12 hex digits)")->required();
  auto* token_map_cert = token_cmd->add_subcommand(
      "map-cert", "let an mTLS client certificate act for a tenant (by its common name)");
  auto* cert_scope = token_map_cert->add_option("--tenant", tenant);
  token_map_cert->add_flag("--operator", operator_scope)->excludes(cert_scope);
  token_map_cert->add_option("--common-name", common_name)->required();
  token_map_cert->add_option("--role", role_name, "read, write or admin")->capture_default_str();
  token_map_cert->add_option("--label", label);
  auto* token_unmap_cert = token_cmd->add_subcommand("unmap-cert", "remove a certificate mapping");
  token_unmap_cert->add_option("--common-name", common_name)->required();

  auto* completion = app.add_subcommand("completion", "print a shell completion script");
  std::string shell;
  completion->add_option("shell", shell, "bash or zsh")
      ->required()
      ->check(CLI::IsMember({"bash", "zsh"}));

  CLI11_PARSE(app, argc, argv);
  engram::cli::Output output(output_format == "table" ? engram::cli::OutputFormat::kTable
                                                      : engram::cli::OutputFormat::kJson);
  g_output = &output;
  if (*completion) {
    std::cout << (shell == "bash" ? engram::cli::BashCompletion(app, "engramctl")
                                  : engram::cli::ZshCompletion(app, "engramctl"));
    return 0;
  }
  if (*token_cmd) {
    return RunTokenCommand(*token_create     ? "create"
                           : *token_list     ? "list"
                           : *token_revoke   ? "revoke"
                           : *token_map_cert ? "map-cert"
                                             : "unmap-cert",
                           tokens_file, operator_scope ? std::string("*") : tenant, role_name,
                           label, *token_revoke ? name : common_name);
  }
  options.timeout = absl::Seconds(timeout_s);
  if (use_tls || !tls_ca.empty() || !tls_cert.empty()) {
    if (absl::Status read = engram::client::ReadTlsFiles(tls_ca, tls_cert, tls_key, &options);
        !read.ok()) {
      return Fail(read);
    }
  }
  Client client(options);

  if (*space_create) {
    absl::StatusOr<v1::Metric> m = ParseMetric(metric);
    if (!m.ok()) return Fail(m.status());
    v1::Space requested;
    requested.set_name(name);
    requested.set_dimension(dimension);
    requested.set_metric(*m);
    requested.mutable_text()->set_stem_language(stem_language);
    requested.set_embedder(embedder);
    auto created = client.CreateSpace(requested);
    if (!created.ok()) return Fail(created.status());
    PrintJson(*created);
  } else if (*space_get) {
    auto found = client.GetSpace(name);
    if (!found.ok()) return Fail(found.status());
    PrintJson(*found);
  } else if (*space_list) {
    auto spaces = client.ListSpaces();
    if (!spaces.ok()) return Fail(spaces.status());
    for (const v1::Space& s : spaces->spaces()) PrintJson(s);
  } else if (*space_delete) {
    auto deleted = client.DeleteSpace(name);
    if (!deleted.ok()) return Fail(deleted.status());
    PrintJson(nlohmann::ordered_json{{"deleted_episodes", *deleted}});
  } else if (*put) {
    // Text and no vector: one episode, embedded by the space's embedder.
    const bool text_only = vector.empty() && vector_file.empty() && !text.empty();
    auto vectors =
        text_only ? std::vector<std::vector<float>>(1) : ReadVectors(vector, vector_file);
    if (!vectors.ok()) return Fail(vectors.status());
    if (!request_id.empty() && vectors->size() != 1) {
      return Fail(absl::InvalidArgumentError("--request-id needs exactly one vector"));
    }
    if (!key.empty() && vectors->size() != 1) {
      return Fail(absl::InvalidArgumentError("--key needs exactly one vector"));
    }
    v1::PutEpisodesRequest request;
    request.set_space(space);
    for (const std::vector<float>& v : *vectors) {
      v1::EpisodeWrite* write = request.add_episodes();
      write->set_request_id(request_id);
      v1::Episode* e = write->mutable_episode();
      e->set_agent_id(agent);
      e->set_session_id(session);
      e->set_kind(kind);
      e->set_text(text);
      e->set_key(key);
      e->mutable_embedding()->Add(v.begin(), v.end());
      if (absl::Status s = ParseMetadata(metadata, e); !s.ok()) return Fail(s);
    }
    auto response = client.PutEpisodes(request);
    if (!response.ok()) return Fail(response.status());
    PrintJson(*response);
  } else if (*get) {
    if (key.empty() && id == 0) {
      return Fail(absl::InvalidArgumentError("name the episode: an id, or --agent and --key"));
    }
    auto episode =
        key.empty() ? client.GetEpisode(space, id) : client.GetEpisodeByKey(space, agent, key);
    if (!episode.ok()) return Fail(episode.status());
    PrintJson(*episode);
  } else if (*agents) {
    v1::ListAgentsRequest request;
    request.set_space(space);
    do {  // every page
      auto page = client.ListAgents(request);
      if (!page.ok()) return Fail(page.status());
      for (const std::string& agent_id : page->agent_ids()) {
        PrintJson(nlohmann::ordered_json{{"agent_id", agent_id}});
      }
      request.set_page_token(page->next_page_token());
    } while (!request.page_token().empty());
  } else if (*history) {
    std::string page_token;
    do {  // every page, oldest first
      auto versions = client.GetHistory(space, id, 0, page_token);
      if (!versions.ok()) return Fail(versions.status());
      for (const v1::Episode& e : versions->versions()) PrintJson(e);
      page_token = versions->next_page_token();
    } while (!page_token.empty());
  } else if (*list) {
    v1::ListEpisodesRequest request;
    request.set_space(space);
    request.set_page_size(page_size);
    request.set_include_embedding(include_embedding);
    request.mutable_filter()->set_agent_id(agent);
    request.mutable_filter()->set_session_id(session);
    for (const std::string& kind_name : kinds) request.mutable_filter()->add_kinds(kind_name);
    do {
      auto page = client.ListEpisodes(request);
      if (!page.ok()) return Fail(page.status());
      for (const v1::Episode& e : page->episodes()) PrintJson(e);
      request.set_page_token(page->next_page_token());
    } while (all_pages && !request.page_token().empty());
    if (!all_pages && !request.page_token().empty()) {
      std::cerr << "(more pages; use --all)\n";
    }
  } else if (*search) {
    v1::SearchRequest request;
    request.set_space(space);
    request.set_k(k);
    request.set_query_text(text);
    if (!vector.empty() || !vector_file.empty() || text.empty()) {
      auto vectors = ReadVectors(vector, vector_file);
      if (!vectors.ok()) return Fail(vectors.status());
      request.mutable_query()->Add(vectors->front().begin(), vectors->front().end());
    }
    request.mutable_filter()->set_agent_id(agent);
    request.mutable_filter()->set_session_id(session);
    request.set_beam_width(beam_width);
    request.set_exact(exact);
    request.set_scan(scan);
    request.set_route(route == "fast"         ? v1::ROUTE_FAST
                      : route == "deliberate" ? v1::ROUTE_DELIBERATE
                                              : v1::ROUTE_AUTO);
    auto response = client.Search(request);
    if (!response.ok()) return Fail(response.status());
    if (explain) {
      std::cout << ExplainSearch(*response);
    } else if (g_output->format() == engram::cli::OutputFormat::kTable) {
      for (const v1::SearchHit& hit : response->hits()) {  // a row per hit
        const v1::Episode& e = hit.episode();
        PrintJson(nlohmann::ordered_json{{"score", hit.score()},
                                         {"id", e.id()},
                                         {"agent_id", e.agent_id()},
                                         {"key", e.key()},
                                         {"kind", e.kind()},
                                         {"text", e.text()}});
      }
      std::cerr << "route " << response->route() << ", " << response->hits_size() << " hits\n";
    } else {
      PrintJson(*response);
    }
  } else if (*analyze) {
    auto response = client.AnalyzeText(space, text, embed_text);
    if (!response.ok()) return Fail(response.status());
    PrintJson(*response);
  } else if (*remove) {
    v1::DeleteEpisodesRequest request;
    request.set_space(space);
    if (!ids.empty()) {
      if (!agent.empty())
        return Fail(absl::InvalidArgumentError("give --ids or --agent, not both"));
      request.mutable_ids()->mutable_ids()->Add(ids.begin(), ids.end());
    } else if (!keys.empty()) {
      if (!session.empty()) {
        return Fail(absl::InvalidArgumentError("give --keys or --session, not both"));
      }
      request.mutable_keys()->set_agent_id(agent);
      for (const std::string& each : keys) request.mutable_keys()->add_keys(each);
    } else if (!session.empty()) {
      request.mutable_session()->set_agent_id(agent);
      request.mutable_session()->set_session_id(session);
    } else if (!agent.empty()) {
      request.set_agent_id(agent);
    }
    auto deleted = client.DeleteEpisodes(request);
    if (!deleted.ok()) return Fail(deleted.status());
    PrintJson(nlohmann::ordered_json{{"deleted", *deleted}});
  } else if (*stats) {
    auto response = client.Stats();
    if (!response.ok()) return Fail(response.status());
    PrintJson(*response);
  } else if (*compact) {
    bool tty = isatty(STDERR_FILENO);
    absl::Status status = client.Compact([tty](const v1::CompactProgress& progress) {
      if (tty) {
        DrawProgress(progress.fraction(), progress.stage());
      } else {
        PrintJson(progress);
      }
      return true;
    });
    if (tty) std::cerr << "\n";
    if (!status.ok()) return Fail(status);
  } else if (*index_stats) {
    auto response = client.Stats();
    if (!response.ok()) return Fail(response.status());
    for (const v1::PartitionStats& partition : response->partitions()) PrintJson(partition);
  } else if (*index_rebuild) {
    bool tty = isatty(STDERR_FILENO);
    absl::Status status =
        client.RebuildIndex(space, [tty](const v1::RebuildIndexProgress& progress) {
          if (tty) {
            double fraction = progress.total() == 0
                                  ? (progress.done() ? 1.0 : 0.0)
                                  : static_cast<double>(progress.indexed()) / progress.total();
            DrawProgress(fraction, absl::StrCat(progress.indexed(), "/", progress.total(),
                                                " episodes indexed"));
          } else {
            PrintJson(progress);
          }
          return true;
        });
    if (tty) std::cerr << "\n";
    if (!status.ok()) return Fail(status);
  } else if (*kv_list) {
    std::string page_token;
    do {  // every page
      auto caches = client.ListCaches(agent, 0, page_token);
      if (!caches.ok()) return Fail(caches.status());
      for (const v1::CacheInfo& cache : caches->caches()) PrintJson(cache);
      page_token = caches->next_page_token();
    } while (!page_token.empty());
  } else if (*kv_stats) {
    auto stats = client.KvStats();
    if (!stats.ok()) return Fail(stats.status());
    PrintJson(*stats);
  } else if (*kv_export) {
    auto exported = client.ExportCache(agent, model_id, path);
    if (!exported.ok()) return Fail(exported.status());
    PrintJson(*exported);
  } else if (*kv_import) {
    auto imported = client.ImportCache(path, agent);
    if (!imported.ok()) return Fail(imported.status());
    PrintJson(imported->cache());
  } else if (*kv_delete) {
    auto deleted = client.DeleteCache(agent, model_id);
    if (!deleted.ok()) return Fail(deleted.status());
    PrintJson(*deleted);
  } else if (*checkpoint) {
    auto path = client.Checkpoint(name);
    if (!path.ok()) return Fail(path.status());
    PrintJson(nlohmann::ordered_json{{"path", *path}});
  } else if (*backup_create) {
    auto info = client.Backup();
    if (!info.ok()) return Fail(info.status());
    PrintJson(*info);
  } else if (*backup_list) {
    auto backups = client.ListBackups();
    if (!backups.ok()) return Fail(backups.status());
    for (const v1::BackupInfo& info : backups->backups()) PrintJson(info);
  } else if (*backup_verify) {
    auto result = client.VerifyBackup(backup_id);
    if (!result.ok()) return Fail(result.status());
    PrintJson(*result);
    if (!result->ok()) return 1;
  } else if (*backup_restore) {
    auto path = client.RestoreBackup(backup_id, name);
    if (!path.ok()) return Fail(path.status());
    PrintJson(nlohmann::ordered_json{{"path", *path}});
  } else if (*health) {
    if (absl::Status s = client.CheckHealth(); !s.ok()) return Fail(s);
    PrintJson(nlohmann::ordered_json{{"status", "SERVING"}});
  } else if (*version) {
    auto info = client.ServerInfo();
    nlohmann::ordered_json line = {{"engramctl", engram::kVersion}, {"build", engram::kBuild}};
    if (info.ok()) {
      line["engramd"] = info->version();
      line["engramd_build"] = info->build();
      line["api"] = info->api();
    }
    PrintJson(line);
    if (!info.ok()) return Fail(info.status());
  } else if (*doctor) {
    return Doctor(client, options);
  }
  return 0;
}
