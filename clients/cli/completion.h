// Shell completion for engramctl, made from its own command tree (CLI11),
// so it never lists a command or option the binary lacks:
//   source <(engramctl completion bash)
//   engramctl completion zsh > "${fpath[1]}/_engramctl"   (or source it)
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace engram::cli {

// A bash script defining and registering the completion function for
// `program`: subcommands and options at each level of the tree.
std::string BashCompletion(const CLI::App& app, const std::string& program);
// The same for zsh, through zsh's bash-completion layer (bashcompinit).
std::string ZshCompletion(const CLI::App& app, const std::string& program);

}  // namespace engram::cli
