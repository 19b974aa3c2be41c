// Runs the engramctl built with this tree (ENGRAMCTL_PATH, defined for every
// test by tests/CMakeLists.txt) against a daemon, for integration tests.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"

namespace engram::testing {

// Runs `engramctl -a address args`; returns (exit code, stdout+stderr).
inline std::pair<int, std::string> RunCtl(const std::string& address, const std::string& args) {
  std::string command = absl::StrCat(ENGRAMCTL_PATH, " -a ", address, " ", args, " 2>&1");
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) output.append(buffer, n);
  int status = pclose(pipe);
  return {WEXITSTATUS(status), output};
}

}  // namespace engram::testing
