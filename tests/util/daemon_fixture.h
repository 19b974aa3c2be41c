// A GoogleTest fixture for tests against a real engramd: a temporary
// directory, the daemon on <dir>/data, and a connected C++ client.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "clients/cpp/engram_client.h"
#include "tests/util/daemon_process.h"
#include "tests/util/temp_dir.h"

namespace engram::testing {

class DaemonTest : public ::testing::Test {
 protected:
  // Starts engramd with `args` (after the defaults of DaemonProcess::Start)
  // and connects client_.
  void StartDaemonWith(const std::vector<std::string>& args) {
    client_.reset();
    auto daemon = DaemonProcess::Start(dir_.Sub("data"), args);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    client_ = NewClient();
    ASSERT_TRUE(client_->WaitForConnected(absl::Seconds(10)));
  }

  // Another client of the running daemon (its own channel), e.g. one per
  // thread of a load test.
  std::unique_ptr<client::Client> NewClient() const {
    client::ClientOptions options;
    options.address = daemon_->address();
    return std::make_unique<client::Client>(options);
  }

  // Graceful shutdown; the daemon must exit 0.
  void StopDaemon() {
    client_.reset();  // idle channels would hold up the graceful shutdown
    EXPECT_EQ(daemon_->Terminate(), 0);
    daemon_.reset();
  }

  TempDir dir_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::unique_ptr<client::Client> client_;
};

}  // namespace engram::testing
