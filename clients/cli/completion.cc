#include "clients/cli/completion.h"

#include <CLI/CLI.hpp>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace engram::cli {
namespace {

// (path of subcommand names, words completed after it), for every node.
void CollectWords(const CLI::App& app, const std::string& path,
                  std::vector<std::pair<std::string, std::string>>& out) {
  std::vector<std::string> words;
  std::vector<const CLI::App*> children = app.get_subcommands([](const CLI::App*) { return true; });
  for (const CLI::App* child : children) words.push_back(child->get_name());
  for (const CLI::Option* option : app.get_options()) {
    for (const std::string& name : option->get_lnames()) words.push_back("--" + name);
    for (const std::string& name : option->get_snames()) words.push_back("-" + name);
  }
  out.emplace_back(path, absl::StrJoin(words, " "));
  for (const CLI::App* child : children) {
    CollectWords(*child, absl::StrCat(path, "/", child->get_name()), out);
  }
}

std::string FunctionName(const std::string& program) {
  std::string name = "_" + program;
  for (char& c : name) {
    if (!isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

}  // namespace

std::string BashCompletion(const CLI::App& app, const std::string& program) {
  std::vector<std::pair<std::string, std::string>> nodes;
  CollectWords(app, "", nodes);
  std::vector<std::string> paths;
  std::string cases;
  for (const auto& [path, words] : nodes) {
    if (!path.empty()) paths.push_back("'" + path + "'");
    absl::StrAppend(&cases, "    '", path, "') words='", words, "' ;;\n");
  }
  const std::string function = FunctionName(program);
  return absl::StrCat("# ", program, " completion for bash (", program, " completion bash)\n",
                      function,
                      "() {\n"
                      "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" path=\"\" word words i\n"
                      "  # The subcommands typed so far; options and their values are skipped.\n"
                      "  for ((i = 1; i < COMP_CWORD; i++)); do\n"
                      "    word=\"${COMP_WORDS[i]}\"\n"
                      "    case \"$path/$word\" in\n"
                      "      ",
                      paths.empty() ? "''" : absl::StrJoin(paths, "|"),
                      ") path=\"$path/$word\" ;;\n"
                      "    esac\n"
                      "  done\n"
                      "  case \"$path\" in\n",
                      cases,
                      "  esac\n"
                      "  COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
                      "}\n"
                      "complete -o default -F ",
                      function, " ", program, "\n");
}

std::string ZshCompletion(const CLI::App& app, const std::string& program) {
  return absl::StrCat("# ", program, " completion for zsh (", program,
                      " completion zsh), through zsh's bash completion layer\n"
                      "autoload -U +X compinit && compinit\n"
                      "autoload -U +X bashcompinit && bashcompinit\n",
                      BashCompletion(app, program));
}

}  // namespace engram::cli
