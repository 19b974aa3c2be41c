"""engramctl as a person and a script meet it: tables on request (the
default on a terminal), JSON lines otherwise with the same fields, shell
completion made from its own command tree, `version` and `doctor`.

Run by ctest with ENGRAMD and ENGRAMCTL set and PYTHONPATH=<build>/python.
"""

import json
import os
import shutil
import subprocess
import unittest

import numpy as np

from engramd_fixture import EngramdTestCase

CTL = os.environ.get("ENGRAMCTL", "engramctl")


def ctl(*args, check=True):
    result = subprocess.run([CTL, *args], capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"engramctl {' '.join(args)}: {result.stderr}")
    return result


class CompletionTest(unittest.TestCase):
    def complete(self, shell_script, *words):
        """What the completion function offers for `words` (the last one is
        being typed)."""
        quoted = " ".join(f"'{w}'" for w in words)
        script = (f"{shell_script}\nCOMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; "
                  "_engramctl; printf '%s\\n' \"${COMPREPLY[@]}\"")
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
        return sorted(out.stdout.split())

    def test_bash_completes_commands_and_options_at_each_level(self):
        script = ctl("completion", "bash").stdout
        self.assertEqual(self.complete(script, "engramctl", "sp"), ["space"])
        self.assertEqual(self.complete(script, "engramctl", "space", "cr"), ["create"])
        self.assertEqual(self.complete(script, "engramctl", "search", "--ro"), ["--route"])
        self.assertEqual(self.complete(script, "engramctl", "kv", "ex"), ["export"])
        self.assertEqual(self.complete(script, "engramctl", "--add"), ["--address"])
        # Options and their values before the command do not lose the place.
        self.assertEqual(self.complete(script, "engramctl", "-o", "table", "ag"), ["agents"])
        self.assertEqual(self.complete(script, "engramctl", "-a", "h:1", "get", "--k"), ["--key"])
        # Every command the binary has is offered at the top.
        top = self.complete(script, "engramctl", "")
        for command in ("space", "put", "get", "search", "delete", "agents", "doctor",
                        "completion", "backup", "kv", "token"):
            self.assertIn(command, top)

    def test_zsh_completion_uses_the_same_function(self):
        script = ctl("completion", "zsh").stdout
        self.assertIn("bashcompinit", script)
        self.assertIn("complete -o default -F _engramctl engramctl", script)
        if shutil.which("zsh"):
            subprocess.run(["zsh", "-c", script], check=True, capture_output=True)
        self.assertNotEqual(ctl("completion", "fish", check=False).returncode, 0)


class OutputTest(EngramdTestCase):
    def test_tables_and_json_lines_carry_the_same_results(self):
        m = self.memory("ctl_out", agent="alice")
        m.create_space(dimension=3, metric="l2")
        rng = np.random.default_rng(4)
        vectors = rng.normal(size=(6, 3)) * 3
        ids = m.add_many([dict(text=f"note\t{i} " + "x" * (80 if i == 2 else 1),
                               embedding=v, key=f"k{i}") for i, v in enumerate(vectors)])
        address = self.server.address

        lines = ctl("-a", address, "list", "-s", "ctl_out").stdout.splitlines()
        rows = [json.loads(line) for line in lines]  # not a terminal: JSON lines
        self.assertEqual([int(r["id"]) for r in rows], list(ids))

        table = ctl("-a", address, "-o", "table", "list", "-s", "ctl_out").stdout.splitlines()
        header = table[0].split()
        for column in ("id", "agent_id", "kind", "text", "key"):
            self.assertIn(column, header)
        self.assertEqual(len(table), 1 + len(ids))
        self.assertEqual([int(line.split()[0]) for line in table[1:]], list(ids))
        self.assertTrue(all("\t" not in line for line in table))
        self.assertIn("…", table[3], "long text is cut")

        query = ",".join(str(x) for x in vectors[4])
        hits = ctl("-a", address, "-o", "table", "search", "-s", "ctl_out", "--vector", query,
                   "-k", "3").stdout.splitlines()
        self.assertEqual(hits[0].split()[:2], ["score", "id"])
        expected = [h.episode.id for h in m.search(vectors[4], k=3, exact=True)]
        self.assertEqual([int(line.split()[1]) for line in hits[1:]], expected)

        one = ctl("-a", address, "-o", "table", "get", "-s", "ctl_out", "--agent", "alice",
                  "--key", "k1").stdout.splitlines()
        self.assertIn(["key", "k1"], [line.split() for line in one])
        self.assertNotEqual(ctl("-a", address, "-o", "yaml", "list", "-s", "ctl_out",
                                check=False).returncode, 0)

    def test_version_and_doctor(self):
        address = self.server.address
        version = json.loads(ctl("-a", address, "version").stdout)
        self.assertEqual(version["engramctl"], version["engramd"])
        self.assertEqual(version["api"], "engram.v1")
        self.assertTrue(ctl("--version").stdout.startswith(f"engramctl {version['engramctl']} "))

        checks = [json.loads(line) for line in ctl("-a", address, "doctor").stdout.splitlines()]
        self.assertEqual([c["check"] for c in checks],
                         ["connect", "health", "credentials", "version", "scans"])
        self.assertTrue(all(c["ok"] for c in checks), checks)

        dead = ctl("-a", "127.0.0.1:1", "--timeout", "2", "doctor", check=False)
        self.assertEqual(dead.returncode, 1)
        failed = json.loads(dead.stdout.splitlines()[0])
        self.assertEqual((failed["check"], failed["ok"]), ("connect", False))
        self.assertIn("ENGRAM_ADDRESS", failed["fix"])


if __name__ == "__main__":
    unittest.main()
