"""scripts/check-proto-compat.py finds every kind of break it promises and
lets additions through: run on copies of proto/ with one change each,
against the released contract kept in the repository.
"""

import importlib.util
import os
import re
import shutil
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
spec = importlib.util.spec_from_file_location(
    "check_proto_compat", os.path.join(ROOT, "scripts", "check-proto-compat.py"))
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)


class ProtoCompatibilityCheckTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.released = check.descriptor_pb2.FileDescriptorSet()
        with open(check.RELEASED) as f:
            check.text_format.Parse(f.read(), cls.released)

    def breaks_after(self, file, old, new, count=1):
        """The breaks found once `old` is replaced by `new` (the first `count`
        times; 0: everywhere) in proto/engram/v1/`file`."""
        work = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, work)
        shutil.copytree(os.path.join(ROOT, "proto", "engram"), os.path.join(work, "engram"))
        path = os.path.join(work, "engram", "v1", file)
        with open(path) as f:
            text = f.read()
        changed = re.sub(old, new, text, count=count, flags=re.MULTILINE)
        self.assertNotEqual(changed, text, f"the test's pattern {old!r} matched nothing")
        with open(path, "w") as f:
            f.write(changed)
        return check.breaking_changes(self.released, check.current_descriptors(work))

    def test_the_repository_is_compatible_with_its_release(self):
        self.assertEqual(check.breaking_changes(self.released,
                                                check.current_descriptors(
                                                    os.path.join(ROOT, "proto"))), [])

    def test_additions_are_compatible(self):
        self.assertEqual(self.breaks_after(
            "memory.proto", r"^  string key = 15;",
            "  string key = 15;\n  string added_later = 99;\n  repeated Episode more = 98;"), [])
        self.assertEqual(self.breaks_after(
            "memory.proto", r"^  rpc ListAgents.*$",
            "\\g<0>\n  rpc Added(ListAgentsRequest) returns (ListAgentsResponse);"), [])

    def test_each_kind_of_break_is_reported(self):
        cases = [
            ("memory.proto", r"^  string session_id = 3;\n", "", "field removed"),
            ("memory.proto", r"^  float importance = 10;", "  double importance = 10;",
             "type changed"),
            ("memory.proto", r"^  string kind = 4;", "  string category = 4;", "renamed"),
            ("memory.proto", r"^  repeated uint64 links = 11;", "  uint64 links = 11;",
             "repeated became singular"),
            ("memory.proto", r"^  string stem_language = 1;", "  optional string stem_language = 1;",
             "singular became optional"),
            ("memory.proto", r"^    EXISTS = 7;\n", "", "enum value removed"),
            ("memory.proto", r"^  METRIC_L2 = 3;", "  METRIC_L2 = 4;", "number 3 became 4"),
            ("memory.proto", r"^  rpc AnalyzeText.*\n", "", "method removed"),
            ("admin.proto", r"returns \(stream CompactProgress\)", "returns (CompactProgress)",
             "server_streaming"),
        ]
        for file, old, new, expected in cases:
            breaks = self.breaks_after(file, old, new)
            self.assertTrue(any(expected in line for line in breaks),
                            f"{old!r} -> {new!r}: {breaks}")
        # A message renamed everywhere: the old one is gone, and so is the
        # method's response type.
        breaks = self.breaks_after("kvcache.proto", r"\bKvStatsResponse\b", "KvStatistics", 0)
        for expected in ("KvStatsResponse: message removed", "output_type"):
            self.assertTrue(any(expected in line for line in breaks), f"{expected}: {breaks}")


if __name__ == "__main__":
    unittest.main()
