#include "tests/util/daemon_process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace engram::testing {

absl::StatusOr<std::unique_ptr<DaemonProcess>> DaemonProcess::Start(
    const std::string& data_dir, const std::vector<std::string>& extra_args,
    const std::string& engramd_path) {
  std::string port_file = data_dir + ".port";
  std::filesystem::remove(port_file);
  std::vector<std::string> args = {engramd_path.empty() ? ENGRAMD_PATH : engramd_path,
                                   "--listen",
                                   "127.0.0.1:0",
                                   "--port-file",
                                   port_file,
                                   "--data-dir",
                                   data_dir,
                                   "--metrics-address",
                                   "off",
                                   "--log-level",
                                   "warn"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  auto daemon = std::unique_ptr<DaemonProcess>(new DaemonProcess());
  daemon->pid_ = fork();
  if (daemon->pid_ < 0) return absl::InternalError("fork failed");
  if (daemon->pid_ == 0) {
    execv(argv[0], argv.data());
    _exit(127);
  }
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    int status = 0;
    if (waitpid(daemon->pid_, &status, WNOHANG) == daemon->pid_) {
      daemon->pid_ = -1;
      return absl::InternalError(absl::StrCat("engramd exited during start, status ", status));
    }
    std::ifstream file(port_file);
    if (file >> daemon->port_ && daemon->port_ > 0) return daemon;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return absl::DeadlineExceededError("engramd did not write its port file within 30 s");
}

DaemonProcess::~DaemonProcess() { Kill9(); }

void DaemonProcess::Kill9() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

int DaemonProcess::Terminate() {
  if (pid_ <= 0) return -1;
  kill(pid_, SIGTERM);
  absl::Time deadline = absl::Now() + absl::Seconds(60);
  int status = 0;
  while (absl::Now() < deadline) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  Kill9();
  return -1;
}

}  // namespace engram::testing
