"""engramd on a full disk (storage/disk_guard.h), on a real 48 MiB tmpfs.

  floor    writes that grow the database are refused with RESOURCE_EXHAUSTED
           "disk full" before the volume fills; the message names sizes,
           not paths; reads, searches, lists and deletes keep working; once
           space is freed, writes resume without a restart;
  at zero  another process fills the volume to the last byte: engramd stays
           up, refuses writes clearly, and resumes once space returns;
  restart  with the volume full to the last byte, engramd still starts (its
           reserve file makes room) and deletes data.

Needs root to mount the tmpfs; skipped with a message where mounting is
refused. Run by ctest with ENGRAMD and PYTHONPATH set.
"""

import itertools
import os
import subprocess
import sys
import tempfile
import unittest

import numpy

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
import engram  # noqa: E402
from engram.kvcache import KVCache, KVModel  # noqa: E402
from engramd_fixture import EngramdProcess  # noqa: E402

DIMENSION = 64
VOLUME_MB = 48
CONFIG = "min_free_disk_mb: 8\ndisk_reserve_mb: 4\n"


def try_mount(path):
    if os.geteuid() != 0:
        return "not root"
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={VOLUME_MB}m", "tmpfs", path],
                            capture_output=True, text=True)
    return None if result.returncode == 0 else result.stderr.strip() or "mount failed"


def fill(path):
    """Appends to `path` until the volume is full to the last block."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 64 << 10, 4 << 10, 512):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)


def free_bytes(path):
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


class DiskFullTest(unittest.TestCase):
    def setUp(self):
        self.volume = tempfile.mkdtemp(prefix="engram-disk-")
        reason = try_mount(self.volume)
        if reason:
            os.rmdir(self.volume)
            self.skipTest(f"cannot mount a tmpfs ({reason}); the disk-full test needs root")
        self.addCleanup(self.unmount)
        self.data_dir = os.path.join(self.volume, "data")
        self.server = None
        self.rng = numpy.random.default_rng(7)

    def unmount(self):
        if self.server is not None:
            self.server.stop()
        subprocess.run(["umount", self.volume], check=False)
        os.rmdir(self.volume)

    def start(self):
        self.server = EngramdProcess(CONFIG, data_dir=self.data_dir)
        m = engram.Memory(self.server.address, space="notes", agent="alice", timeout=30)
        m.wait_ready()
        self.addCleanup(m.close)
        return m

    def stop(self):
        self.assertEqual(self.server.stop(), 0, "engramd did not shut down cleanly")
        self.server = None

    def batch(self, n=32):
        # 8 KiB of text each: the volume fills with a few thousand episodes,
        # so the vector index never builds a graph (which would make this a
        # test of indexing speed on a busy machine).
        return [{"text": f"disk filler {self.rng.integers(1 << 30)} " + "padding " * 1024,
                 "embedding": self.rng.standard_normal(DIMENSION).tolist()} for _ in range(n)]

    def fill_until_refused(self, m):
        for _ in range(10000):
            try:
                m.add_many(self.batch())
            except engram.ResourceExhaustedError as refused:
                return str(refused)
        self.fail("writes were never refused")

    def assert_up_and_readable(self, m, count):
        self.assertIsNone(self.server.process.poll(), "engramd exited")
        self.assertEqual(m.get_space().episode_count, count)
        self.assertEqual(len(m.search(self.rng.standard_normal(DIMENSION).tolist(), k=5)), 5)
        self.assertEqual(len(m.search(text="filler", k=5)), 5)
        self.assertEqual(len(list(itertools.islice(m.list(page_size=10), 10))), 10)

    def kv_tensors(self, model, tokens):
        shape = (model.n_kv_heads, tokens, model.head_dim)
        layers = [self.rng.standard_normal(shape).astype(numpy.float16)
                  for _ in range(2 * model.n_layers)]
        return layers[:model.n_layers], layers[model.n_layers:]

    def test_floor_then_zero_then_resume_without_restart(self):
        m = self.start()
        m.create_space(DIMENSION)
        model = KVModel("disk-test", n_layers=2, n_kv_heads=2, head_dim=64)
        cache = KVCache(self.server.address, model)
        self.addCleanup(cache.close)
        tokens = list(range(256))
        cache.save("alice", tokens, *self.kv_tensors(model, 256))
        self.assertTrue(os.path.exists(os.path.join(self.data_dir, "ENGRAM-DISK-RESERVE")))
        other = os.path.join(self.volume, "other-process")
        with open(other, "wb") as f:  # another tenant of the volume
            f.write(b"\0" * (12 << 20))

        message = self.fill_until_refused(m)
        self.assertIn("disk full:", message)
        self.assertIn("writes need", message)
        self.assertNotIn(self.volume, message)  # sizes, not paths
        self.assertGreaterEqual(free_bytes(self.volume), 7 << 20)  # refused before full
        count = m.get_space().episode_count
        self.assertGreater(count, 0)
        self.assert_up_and_readable(m, count)
        with self.assertRaises(engram.ResourceExhaustedError):  # still refused
            m.add_many(self.batch())
        ids = [e.id for e in m.list(page_size=3)][:3]
        self.assertEqual(m.delete(ids), 3)  # deletes pass the floor
        count -= 3

        os.remove(other)  # space returns: writes resume, no restart
        m.add_many(self.batch(8))
        count += 8
        self.assert_up_and_readable(m, count)

        fill(other)  # now another process takes the last byte
        self.assertLess(free_bytes(self.volume), 1 << 20)
        for _ in range(3):
            with self.assertRaises(engram.ResourceExhaustedError) as refused:
                m.add_many(self.batch(4))
            self.assertIn("disk full", str(refused.exception))
        with self.assertRaises(engram.ResourceExhaustedError):
            cache.save("bob", tokens, *self.kv_tensors(model, 256))
        self.assertEqual(cache.load("alice")[0], tokens)  # KV loads keep working
        self.assert_up_and_readable(m, count)

        os.remove(other)
        m.add_many(self.batch(4))
        cache.save("bob", tokens, *self.kv_tensors(model, 256))
        self.assert_up_and_readable(m, count + 4)

    def test_restart_on_a_volume_full_to_the_last_byte(self):
        m = self.start()
        m.create_space(DIMENSION)
        for _ in range(20):
            m.add_many(self.batch())
        count = m.get_space().episode_count
        self.stop()
        fill(os.path.join(self.volume, "other-process"))
        self.assertLess(free_bytes(self.volume), 1 << 20)

        m = self.start()  # the reserve makes room for opening the database
        self.assertEqual(m.get_space().episode_count, count)
        self.assertFalse(os.path.exists(os.path.join(self.data_dir, "ENGRAM-DISK-RESERVE")))
        with self.assertRaises(engram.ResourceExhaustedError):
            m.add_many(self.batch(1))
        self.assertEqual(m.delete_space(), count)  # data can always be deleted
        self.stop()


if __name__ == "__main__":
    unittest.main()
