// Runs a real engramd as a child process on a free loopback port, for the
// integration and crash tests and bench_server.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace engram::testing {

class DaemonProcess {
 public:
  // Starts engramd (`engramd_path`, or the one built with this tree when
  // empty) with --data-dir `data_dir` on 127.0.0.1:0 and waits (up to 30 s)
  // until it has written its port file. `extra_args` override the defaults.
  static absl::StatusOr<std::unique_ptr<DaemonProcess>> Start(
      const std::string& data_dir, const std::vector<std::string>& extra_args = {},
      const std::string& engramd_path = "");
  // Kills the daemon (SIGKILL) if it still runs.
  ~DaemonProcess();

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }

  // SIGKILL, like a crash; waits for the process to be gone.
  void Kill9();
  // SIGTERM, then waits; returns the exit status (-1 if it did not exit in 60 s).
  int Terminate();

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace engram::testing
