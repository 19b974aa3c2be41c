// The engramd a benchmark drives: a running one at a given address, or one
// the benchmark starts on a temporary data dir (and stops when done), with a
// connected client either way. Header-only: benchmarks only.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "clients/cpp/engram_client.h"
#include "tests/util/daemon_process.h"
#include "tests/util/temp_dir.h"

namespace engram::bench {

struct EngramdTarget {
  std::unique_ptr<testing::TempDir> dir;           // set when started here
  std::unique_ptr<testing::DaemonProcess> daemon;  // set when started here
  std::unique_ptr<client::Client> client;
};

// Connects to `address`, or when it is empty starts `engramd_path` with
// `args` on a temporary data dir first. UNAVAILABLE when no connection is
// made within 10 s.
inline absl::StatusOr<EngramdTarget> ConnectOrStart(std::string address,
                                                    const std::string& engramd_path,
                                                    const std::vector<std::string>& args) {
  EngramdTarget target;
  if (address.empty()) {
    target.dir = std::make_unique<testing::TempDir>();
    auto started = testing::DaemonProcess::Start(target.dir->Sub("data"), args, engramd_path);
    if (!started.ok()) return started.status();
    target.daemon = *std::move(started);
    address = target.daemon->address();
  }
  client::ClientOptions options;
  options.address = address;
  target.client = std::make_unique<client::Client>(options);
  if (!target.client->WaitForConnected(absl::Seconds(10))) {
    return absl::UnavailableError(absl::StrCat("cannot connect to ", address));
  }
  return target;
}

}  // namespace engram::bench
