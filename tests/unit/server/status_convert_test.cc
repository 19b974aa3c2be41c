#include "server/status_convert.h"

#include <gtest/gtest.h>

#include <string>

namespace engram::server {
namespace {

TEST(StatusConvertTest, CodesPassAndLongMessagesAreCutAtACharacterBoundary) {
  EXPECT_EQ(ToGrpcStatus(absl::NotFoundError("x")).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  // 'é' is two bytes; 1023 ASCII bytes put one across the cut.
  std::string message = std::string(1023, 'a');
  for (int i = 0; i < 1000; ++i) message += "\xc3\xa9";
  const std::string cut = ToGrpcStatus(absl::InvalidArgumentError(message)).error_message();
  EXPECT_LT(cut.size(), kMaxStatusMessageBytes + 64);
  EXPECT_EQ(cut.substr(0, 1024), std::string(1023, 'a') + "." /* the é was not split */);
  EXPECT_NE(cut.find("more bytes of this message cut"), std::string::npos);
}

TEST(StatusConvertTest, ServerPathsAreNamedByTheirConfigKeys) {
  SetScrubbedPaths({{"/srv/engram/data", "<data_dir>"},
                    {"/srv/engram/data/index", "<index.snapshot_dir>"},
                    {"/srv/exports", "<kv.export_dir>"},
                    {"/", "<root is never scrubbed>"}});
  auto shown = [](const std::string& message) {
    return ToGrpcStatus(absl::InternalError(message)).error_message();
  };
  EXPECT_EQ(shown("IO error: While appending to file: /srv/engram/data/000123.log: No space"),
            "IO error: While appending to file: <data_dir>/000123.log: No space");
  EXPECT_EQ(shown("cannot open '/srv/engram/data/index/p1.snap'"),
            "cannot open '<index.snapshot_dir>/p1.snap'");
  EXPECT_EQ(shown("creating /srv/exports/a and /srv/exports/b"),
            "creating <kv.export_dir>/a and <kv.export_dir>/b");
  EXPECT_EQ(shown("/srv/engram/database is another directory"),
            "/srv/engram/database is another directory");
  EXPECT_EQ(shown("dir /srv/exports"), "dir <kv.export_dir>");
  SetScrubbedPaths({});
  EXPECT_EQ(shown("/srv/exports/a"), "/srv/exports/a");
}

}  // namespace
}  // namespace engram::server
