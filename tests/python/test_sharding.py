"""Agents sharded across three engramd processes on loopback (docs/sharding.md).

One scenario, in numbered steps sharing the deployment: placement agrees
with the shared vectors in Python and in engramd; a few hundred agents
written and searched through the sharded client give what one engramd
holding the same data gives (checked against exact search, on inner product
with vectors far from unit length); a shard killed -9 mid-run loses no
acknowledged write; a fourth shard is added and its agents moved, an
interrupted move re-run, with ids, versions, keys, history and KV caches
kept.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import grpc
import numpy as np

from engram import Admin, EngramError, FailedPreconditionError, KVCache, KVModel, Memory
from engram.memory import AGENT_HEADER, agent_header
from engram.sharding import (ShardedKVCache, ShardedMemory, _copy_episodes, move_agent,
                             owner_shard, placement_hash, placement_weight, rebalance,
                             shard_of_id)
from engram.v1 import memory_pb2

sys.path.insert(0, os.path.dirname(__file__))
from engramd_fixture import EngramdProcess  # noqa: E402

VECTORS = os.path.join(os.path.dirname(__file__), "..", "data", "placement_vectors.json")
DIM = 16
AGENTS = [f"agent-{i}" for i in range(300)]
MODEL = KVModel("tiny-model", n_layers=2, n_kv_heads=2, head_dim=64)
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
             grpc.StatusCode.DEADLINE_EXCEEDED)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Shard:
    """One engramd of the deployment: a fixed port and data dir, so it can be
    killed, restarted and given a new shard count."""

    def __init__(self, root, index, count):
        self.index = index
        self.address = f"127.0.0.1:{free_port()}"
        self.data_dir = os.path.join(root, f"shard-{index}")
        self.process = None
        self.start(count)

    def start(self, count):
        self.process = EngramdProcess(f"shard:\n  count: {count}\n", data_dir=self.data_dir,
                                      listen=self.address, args=("--shard-index", str(self.index)))

    def restart(self, count):
        assert self.process.stop() == 0
        self.start(count)


def unfriendly_vector(rng):
    """Directions at random, lengths from 0.05 to 20: inner product then
    ranks by length as much as by angle."""
    v = rng.standard_normal(DIM)
    return (v / np.linalg.norm(v) * rng.uniform(0.05, 20.0)).tolist()


class ShardedDeploymentTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="engram-shards-")
        cls.shards = [Shard(cls.root, i, 3) for i in range(3)]
        cls.single = EngramdProcess()
        cls.rng = np.random.default_rng(16)
        cls.texts = {}  # text -> agent, of every episode written

    @classmethod
    def tearDownClass(cls):
        for shard in cls.shards:
            assert shard.process.stop() == 0
        assert cls.single.stop() == 0

    def sharded(self, **options) -> ShardedMemory:
        memory = ShardedMemory([s.address for s in self.shards], space="mem", **options)
        self.addCleanup(memory.close)
        return memory

    def reference(self) -> Memory:
        memory = Memory(self.single.address, space="mem")
        self.addCleanup(memory.close)
        return memory

    def write(self, sharded, reference, episodes):
        """The same episodes into the deployment and into the single engramd."""
        ids = sharded.add_many(episodes)
        reference.add_many(episodes)
        for e in episodes:
            self.texts[e["text"]] = e["agent"]
        return ids

    def assert_same_as_single(self, sharded, reference, agents):
        """Per-agent exact searches, whole-space fan-out searches and the
        default route all agree with the single engramd's exact answers."""
        for agent in agents:
            query = unfriendly_vector(self.rng)
            got = sharded.search(query, k=5, agent=agent, exact=True)
            want = reference.search(query, k=5, agent=agent, exact=True)
            self.assertEqual([h.episode.text for h in got], [h.episode.text for h in want], agent)
            np.testing.assert_allclose([h.score for h in got], [h.score for h in want],
                                       rtol=1e-5)
            routed = sharded.search(query, k=5, agent=agent)
            self.assertEqual([h.episode.text for h in routed], [h.episode.text for h in want],
                             f"{agent}: default route vs exact")
        for where in (None, {"parity": "even"}, {"parity": "none"}):
            query = unfriendly_vector(self.rng)
            got = sharded.search(query, k=20, agent="", exact=True, where=where)
            want = reference.search(query, k=20, agent="", exact=True, where=where)
            self.assertEqual([h.episode.text for h in got], [h.episode.text for h in want], where)
            np.testing.assert_allclose([h.score for h in got], [h.score for h in want],
                                       rtol=1e-5)
            self.assertTrue(all(h.episode.metadata.get("parity") == where["parity"]
                                for h in got) if where else True)
        self.assertEqual(sharded.get_space().episode_count, reference.get_space().episode_count)
        self.assertEqual(list(sharded.list_agents(page_size=37)),
                         list(reference.list_agents(page_size=37)))

    # 1 ------------------------------------------------------------------

    def test_1_placement_matches_the_vectors_in_python_and_engramd(self):
        with open(VECTORS) as f:
            vectors = json.load(f)
        for entry in vectors["hash"]:
            self.assertEqual(placement_hash(bytes.fromhex(entry["bytes_hex"])),
                             int(entry["hash"], 16))
        for entry in vectors["agent_header"]:
            agent = bytes.fromhex(entry["agent_hex"])
            if agent.decode("utf-8", "replace").encode() == agent:  # ids the client can send
                self.assertEqual(agent_header(agent.decode()), ((AGENT_HEADER, entry["encoded"]),))
        for entry in vectors["placement"]:
            for shard, weight in enumerate(entry["weights"]):
                self.assertEqual(placement_weight(entry["tenant"], entry["agent"], shard),
                                 int(weight, 16))
            self.assertEqual([owner_shard(entry["tenant"], entry["agent"], n)
                              for n in range(1, len(entry["owner_by_count"]) + 1)],
                             entry["owner_by_count"])
        for i, shard in enumerate(self.shards):
            with Admin(shard.address) as admin:
                info = admin.server_info()
            self.assertEqual((info["tenant"], info["shard_index"], info["shard_count"]),
                             ("default", i, 3))
            with Memory(shard.address, space="vectors") as memory:
                memory.create_space(4)
        # engramd places the vectors' agents (tenant "default", 3 shards) where they say.
        for entry in vectors["placement"]:
            if entry["tenant"] != "default" or not entry["agent"] or len(entry["agent"]) > 256:
                continue
            owner = entry["owner_by_count"][2]
            for i, shard in enumerate(self.shards):
                with Memory(shard.address, space="vectors") as memory:
                    if i == owner:
                        self.assertGreater(memory.add("v", [1, 2, 3, 4], agent=entry["agent"]),
                                           0)
                    else:
                        with self.assertRaises(FailedPreconditionError) as refused:
                            memory.add("v", [1, 2, 3, 4], agent=entry["agent"])
                        self.assertIn(f"belongs to shard {owner} of 3", str(refused.exception))
        # An import is a write: refused off the owner too, naming it.
        agent = vectors["placement"][0]["agent"]
        owner = owner_shard("default", agent, 3)
        moved = memory_pb2.Episode(id=(owner << 40) | 1, version=1, agent_id=agent,
                                   embedding=[1, 2, 3, 4])
        with Memory(self.shards[(owner + 1) % 3].address) as memory:
            with self.assertRaises(grpc.RpcError) as refused:
                memory._stub.ImportEpisodes(memory_pb2.ImportEpisodesRequest(
                    space="vectors", episodes=[memory_pb2.ImportedEpisode(episode=moved)]))
        self.assertEqual(refused.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn(f"belongs to shard {owner} of 3", refused.exception.details())
        # A client given the shards out of order is stopped before it routes.
        with self.assertRaises(FailedPreconditionError):
            ShardedMemory([self.shards[1].address, self.shards[0].address,
                           self.shards[2].address])

    # 2 ------------------------------------------------------------------

    def test_2_sharded_writes_and_searches_equal_one_engramd(self):
        sharded, reference = self.sharded(), self.reference()
        sharded.create_space(DIM, metric="ip")
        reference.create_space(DIM, metric="ip")
        shards_seen = set()
        n = 0
        # Batches of 40 episodes of many agents: each spans the shards.
        for start in range(0, len(AGENTS) * 3, 40):
            batch = []
            for j in range(start, min(start + 40, len(AGENTS) * 3)):
                agent = AGENTS[(j * 7) % len(AGENTS)]
                batch.append(dict(text=f"episode {n} of {agent}", agent=agent,
                                  embedding=unfriendly_vector(self.rng),
                                  metadata={"parity": "even" if n % 2 == 0 else "odd"}))
                n += 1
            ids = self.write(sharded, reference, batch)
            for episode_id, e in zip(ids, batch):
                home = shard_of_id(episode_id)
                self.assertEqual(home, sharded.owner(e["agent"]), "ids carry their shard")
                shards_seen.add(home)
        self.assertEqual(shards_seen, {0, 1, 2})
        # Every shard holds only its own agents.
        for i, shard in enumerate(self.shards):
            with Memory(shard.address, space="mem") as memory:
                agents = list(memory.list_agents())
            self.assertTrue(agents)
            self.assertTrue(all(sharded.owner(a) == i for a in agents))
        self.assert_same_as_single(sharded, reference, AGENTS[:40:3])
        # Keys, updates and history through the sharded client.
        agent = AGENTS[5]
        first = sharded.add("profile v1", unfriendly_vector(self.rng), agent=agent,
                            key="profile")
        again = sharded.add("profile v2", unfriendly_vector(self.rng), agent=agent,
                            key="profile")
        self.assertEqual(first, again)
        self.assertTrue(again.replaced)
        sharded.update(first, text="profile v3")
        self.assertEqual([v.text for v in sharded.history(key="profile", agent=agent)],
                         ["profile v1", "profile v2", "profile v3"])
        self.assertEqual(sharded.get(first).text, "profile v3")
        self.assertEqual(sharded.delete(first), 1)

    # 3 ------------------------------------------------------------------

    def test_3_a_shard_killed_mid_run_loses_no_acknowledged_write(self):
        sharded = self.sharded(write_attempts=2)
        victim = self.shards[1]
        acknowledged = {}  # id -> text
        failed = []  # batches to send again, with the request ids they were sent with
        stop = threading.Event()
        errors = []

        def writer():
            rng = np.random.default_rng(3)
            n = 0
            while not stop.is_set():
                batch = [dict(text=f"run {n + j}", agent=AGENTS[(n + j) * 13 % len(AGENTS)],
                              embedding=unfriendly_vector(rng)) for j in range(6)]
                n += len(batch)
                try:
                    for episode_id, e in zip(sharded.add_many(batch), batch):
                        acknowledged[episode_id] = e["text"]
                except EngramError as error:
                    # Down (the killed shard), or busy or slow on a loaded
                    # machine: sent again later with the same request ids.
                    if error.code not in RETRYABLE:
                        errors.append(error)
                        return
                    for e, request_id in zip(batch, error.request_ids):
                        e["request_id"] = request_id
                    failed.append(batch)
                except Exception as error:  # noqa: BLE001 - reported below
                    errors.append(error)
                    return

        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(1.0)
        victim.process.kill()
        time.sleep(1.0)
        during = len(failed)
        victim.start(3)
        time.sleep(1.0)
        stop.set()
        thread.join()
        self.assertEqual(errors, [])
        self.assertGreater(during, 0, "writes to the killed shard failed while it was down")
        # Sent again with their request ids once the shard is back (the
        # client's channel waits out gRPC's reconnect backoff): each applied once.
        for shard in sharded.shards:
            shard.wait_ready(timeout=30)
        for batch in failed:
            for episode_id, e in zip(sharded.add_many(batch), batch):
                acknowledged[episode_id] = e["text"]
        self.assertGreater(len(acknowledged), 100)
        for episode_id, text in acknowledged.items():
            self.assertEqual(sharded.get(episode_id).text, text)
        texts = [e.text for e in sharded.list(agent="") if e.text.startswith("run ")]
        self.assertEqual(len(texts), len(set(texts)), "a retried write was applied twice")
        self.assertEqual(set(texts), set(acknowledged.values()))
        # Put the same episodes into the reference, so later steps compare.
        reference = self.reference()
        for episode in sharded.list(agent="", include_embedding=True):
            if episode.text.startswith("run "):
                reference.add(episode.text, episode.embedding, agent=episode.agent_id)
                self.texts[episode.text] = episode.agent_id

    # 4 ------------------------------------------------------------------

    def test_4_adding_a_shard_moves_its_agents_with_everything_they_had(self):
        sharded, reference = self.sharded(), self.reference()
        moving = [a for a in AGENTS if owner_shard("default", a, 4) == 3]
        self.assertGreater(len(moving), 40)
        keeper = moving[0]
        # A keyed episode with a history, and a KV cache, on a moving agent.
        keyed = sharded.add("keeper v1", unfriendly_vector(self.rng), agent=keeper, key="k")
        sharded.update(keyed, text="keeper v2")
        reference.add("keeper v2", sharded.get(keyed).embedding, agent=keeper)
        rng = np.random.default_rng(7)
        keys = [rng.standard_normal((2, 300, 64)).astype(np.float16) for _ in range(2)]
        values = [rng.standard_normal((2, 300, 64)).astype(np.float16) for _ in range(2)]
        with ShardedKVCache([s.address for s in self.shards], MODEL) as kv:
            kv.save(keeper, list(range(300)), keys, values)
            stored = kv.load_quantized(keeper)
        source = self.shards[sharded.owner(keeper)]
        # Moving needs the new placement everywhere first.
        new = Shard(self.root, 3, 4)
        self.shards.append(new)
        with self.assertRaises(FailedPreconditionError):
            move_agent(source.address, new.address, keeper)  # the source still owns it
        for shard in self.shards[:3]:
            shard.restart(4)
        with Memory(source.address, space="mem") as old:
            with self.assertRaises(FailedPreconditionError) as refused:
                old.add("late", unfriendly_vector(self.rng), agent=keeper)
            self.assertIn("belongs to shard 3 of 4", str(refused.exception))
        # An interrupted move: the episodes of one agent copied, nothing
        # deleted; the move then runs again from the start.
        interrupted = moving[1]
        home = self.shards[owner_shard("default", interrupted, 3)]
        with Memory(home.address) as src, Memory(new.address) as dst:
            copied = _copy_episodes(src, dst, "mem", interrupted, 30.0)
        self.assertGreater(copied, 0)
        # The documented command, for one agent; then every other.
        old_owner = self.shards[owner_shard("default", keeper, 3)]
        command = [sys.executable, "-m", "engram.sharding", "move", "--from",
                   old_owner.address, "--to", new.address, "--agent", keeper]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(json.loads(done.stdout)["caches"], 1)
        reports = rebalance([s.address for s in self.shards])
        # Agents of step 1's "vectors" space move too: every agent shard 3 now owns.
        self.assertLessEqual(set(moving) - {keeper}, set(reports))
        self.assertTrue(all(owner_shard("default", a, 4) == 3 for a in reports))
        for agent, report in reports.items():
            self.assertEqual(report["deleted_episodes"], sum(report["episodes"].values()), agent)
        self.assertGreater(sum(r["episodes"].get("mem", 0) for r in reports.values()), 100)
        self.assertEqual(rebalance([s.address for s in self.shards]), {}, "nothing left to move")
        # The source copies are gone; the new shard has exactly its agents.
        with Memory(new.address, space="mem") as memory:
            self.assertEqual(set(memory.list_agents()), set(moving))
        for shard in self.shards[:3]:
            with Memory(shard.address, space="mem") as memory:
                self.assertFalse(set(memory.list_agents()) & set(moving))
        # Four shards answer as the single engramd does.
        sharded4 = self.sharded()
        self.assert_same_as_single(sharded4, reference, moving[:10] + AGENTS[:10])
        versions = sharded4.history(key="k", agent=keeper)
        self.assertEqual([(v.id, v.version, v.text) for v in versions],
                         [(keyed, 1, "keeper v1"), (keyed, 2, "keeper v2")])
        self.assertEqual(shard_of_id(keyed), owner_shard("default", keeper, 3),
                         "a moved episode keeps its id")
        self.assertEqual(sharded4.get(keyed).text, "keeper v2")  # found off its home shard
        updated = sharded4.update(keyed, text="keeper v3")
        self.assertEqual(updated.version, 3)
        fresh = sharded4.add("after the move", unfriendly_vector(self.rng), agent=keeper)
        self.assertEqual(shard_of_id(fresh), 3)
        with ShardedKVCache([s.address for s in self.shards], MODEL) as kv:
            tokens, layers = kv.load_quantized(keeper)
        self.assertEqual(tokens, stored[0])
        for got, want in zip(layers, stored[1]):
            for name in want:
                np.testing.assert_array_equal(got[name], want[name])
        with KVCache(source.address, MODEL) as old_kv:
            self.assertEqual(old_kv.list(keeper), [])


if __name__ == "__main__":
    unittest.main()
