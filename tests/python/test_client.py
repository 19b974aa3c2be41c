"""The Python client against a live engramd (started here on a free port).

Run by ctest with ENGRAMD=<path to engramd> and PYTHONPATH=<build>/python.
"""

import unittest
from concurrent import futures

import grpc
import numpy as np

import engram
from engram import Memory
from engram.v1 import memory_pb2, memory_pb2_grpc
from engramd_fixture import EngramdTestCase


class MemoryClientTest(EngramdTestCase):
    def test_a_retried_write_says_it_was_deduplicated(self):
        m = self.memory("py_dedup")
        m.create_space(dimension=2)
        first = m.add("once", [1.0, 0.0], request_id="req-1")
        again = m.add("once", [1.0, 0.0], request_id="req-1")
        self.assertFalse(first.deduplicated)
        self.assertTrue(again.deduplicated)
        self.assertEqual(first, again)
        self.assertEqual(m.get_space().episode_count, 1)

    def test_admin_reports_stats_compacts_backs_up_and_rebuilds(self):
        m = self.memory("py_admin")
        m.create_space(dimension=2)
        m.add_many([dict(text=str(i), embedding=[1.0, float(i)]) for i in range(10)])
        admin = engram.Admin(self.server.address)
        self.addCleanup(admin.close)
        stats = admin.stats()
        self.assertIn("py_admin", [space["name"] for space in stats["spaces"]])
        self.assertEqual(int(stats["index_health"]["add_failures"]), 0)
        fractions = []
        admin.compact(lambda fraction, stage: fractions.append(fraction))
        self.assertEqual(fractions[-1], 1.0)
        progress = []
        admin.rebuild_index("py_admin", lambda indexed, total: progress.append((indexed, total)))
        self.assertEqual(progress[-1], (10, 10))
        backup = admin.backup()
        self.assertIn(backup.backup_id, [b.backup_id for b in admin.list_backups()])
        admin.verify_backup(backup.backup_id)
        with self.assertRaises(engram.NotFoundError):
            admin.rebuild_index("no_such_space")

    def test_spaces_are_dataclasses_and_a_missing_space_is_named(self):
        m = self.memory("py_spaces")
        created = m.create_space(dimension=3, metric="ip")
        self.assertEqual((created.name, created.dimension, created.metric), ("py_spaces", 3, "ip"))
        self.assertIn("py_spaces", [space.name for space in m.list_spaces()])
        self.assertEqual(m.get_space().episode_count, 0)
        nameless = Memory(self.server.address, agent="a")
        self.addCleanup(nameless.close)
        with self.assertRaisesRegex(engram.InvalidArgumentError, "no space given"):
            nameless.search([1.0, 0.0, 0.0], k=1)

    def test_add_search_get_update_history_delete(self):
        m = self.memory("py_roundtrip")
        m.create_space(dimension=4)
        rng = np.random.default_rng(1)
        vectors = rng.normal(size=(20, 4)).astype(np.float32)
        ids = m.add_many([dict(text=f"note {i}", embedding=v, metadata={"i": i, "even": i % 2 == 0})
                          for i, v in enumerate(vectors)])
        self.assertEqual(len(set(ids)), 20)

        hits = m.search(vectors[7], k=3, route="fast")
        self.assertEqual(hits[0].episode.id, ids[7])
        self.assertAlmostEqual(hits[0].score, 1.0, places=5)
        self.assertEqual(len(hits), 3)
        self.assertGreaterEqual(hits[0].score, hits[1].score)

        filtered = m.search(vectors[7], k=20, where=[("i", ">=", 15), ("even", "==", True)])
        self.assertEqual(sorted(h.episode.metadata["i"] for h in filtered), [16, 18])

        self.assertEqual(hits.route, "index")
        self.assertEqual([stage.name for stage in hits.stages], ["index", "hydrate"])
        self.assertEqual(hits.stages[1].candidates, 3)
        self.assertEqual(m.search(vectors[7], k=3, exact=True).route, "exact")

        exact = [h.episode.id for h in m.search(vectors[7], k=5, exact=True)]
        self.assertEqual(exact, [h.episode.id for h in m.search(vectors[7], k=5)])
        # The full-deliberation scan (CPU twin here) ranks like the exact route.
        scanned = m.search(vectors[7], k=5, scan=True)
        self.assertEqual([h.episode.id for h in scanned], exact)
        self.assertAlmostEqual(scanned[0].score, 1.0, places=3)  # scored on fp16 copies
        with self.assertRaises(engram.InvalidArgumentError):
            m.search(vectors[7], k=3, beam_width=100000)

        episode = m.get(ids[3])
        self.assertEqual(episode.text, "note 3")
        np.testing.assert_allclose(episode.embedding, vectors[3], rtol=1e-6)

        updated = m.update(ids[3], text="note three", expected_version=1)
        self.assertEqual(updated.version, 2)
        self.assertEqual([v.text for v in m.history(ids[3])], ["note 3", "note three"])
        self.assertEqual([v.version for v in m.history(ids[3], page_size=1)], [1, 2])
        with self.assertRaises(engram.FailedPreconditionError):
            m.update(ids[3], text="stale", expected_version=1)

        self.assertEqual(m.delete([ids[0], ids[1]]), 2)
        with self.assertRaises(engram.NotFoundError):
            m.get(ids[0])
        self.assertEqual(len(list(m.list(page_size=7))), 18)
        # list() fetches pages as it is iterated.
        pages = m.list(page_size=7)
        self.assertEqual(next(pages).id, ids[2])
        self.assertEqual(len(list(pages)), 17)
        self.assertEqual(m.forget_agent(), 18)

    def test_keys_upsert_and_name_episodes(self):
        # Inner product on vectors far from unit length: a replaced vector
        # that lingered in the index would outscore the new one.
        m = self.memory("py_keys", agent="alice")
        m.create_space(dimension=4, metric="ip")
        rng = np.random.default_rng(3)
        others = rng.normal(size=(300, 4)).astype(np.float32)
        m.add_many([dict(text=f"other {i}", embedding=v) for i, v in enumerate(others)])
        old = np.array([40.0, 0.0, 0.0, 0.0], dtype=np.float32)
        new = np.array([0.0, 0.0, -3.0, 0.5], dtype=np.float32)
        first = m.add("likes tea", old, key="profile", metadata={"v": 1})
        self.assertFalse(first.replaced)
        second = m.add("likes coffee", new, key="profile", metadata={"v": 2})
        self.assertTrue(second.replaced)
        self.assertEqual(second, first)
        self.assertEqual(m.get_space().episode_count, 301)

        current = m.get(key="profile")
        self.assertEqual((current.id, current.version, current.key), (first, 2, "profile"))
        self.assertEqual(current.text, "likes coffee")
        self.assertEqual([v.text for v in m.history(key="profile")], ["likes tea", "likes coffee"])
        # Every route ranks the new vector, never the old one, as exact does.
        for query in (old, new, -old):
            exact = m.search(query, k=10, exact=True)
            for route in (dict(route="fast"), dict(scan=True)):
                hits = m.search(query, k=10, **route)
                self.assertEqual([h.episode.id for h in hits], [h.episode.id for h in exact],
                                 route)
            for hit in exact:
                if hit.episode.id == first:
                    self.assertAlmostEqual(hit.score, float(np.dot(query, new)), places=3)
        # Filters see the replacement's metadata, not the old one's.
        self.assertEqual(len(m.search(old, k=5, where=[("v", "==", 1)])), 0)
        self.assertEqual([h.episode.id for h in m.search(old, k=5, where=[("v", "==", 2)])],
                         [first])

        # Keys belong to their agent.
        bob = self.memory("py_keys", agent="bob")
        bobs = bob.add("bob's profile", new, key="profile")
        self.assertFalse(bobs.replaced)
        self.assertNotEqual(bobs, first)
        self.assertEqual(m.get(key="profile", agent="bob").text, "bob's profile")

        updated = m.update(key="profile", importance=0.5, expected_version=2)
        self.assertEqual((updated.id, updated.version), (first, 3))
        with self.assertRaises(engram.NotFoundError):
            m.get(key="nope")
        with self.assertRaises(engram.InvalidArgumentError):
            m.get(first, key="profile")
        with self.assertRaises(engram.InvalidArgumentError):
            m.add_many([dict(text="a", embedding=new, key="k"),
                        dict(text="b", embedding=new, key="k")])
        with self.assertRaises(engram.NotFoundError):
            m.delete(keys=["profile", "nope"])
        self.assertEqual(m.delete(keys="profile"), 1)
        with self.assertRaises(engram.NotFoundError):
            m.get(key="profile")
        self.assertNotIn(first, [h.episode.id for h in m.search(new, k=10)])
        self.assertEqual(bob.get(key="profile").id, bobs)
        # A freed key starts a new episode.
        again = m.add("likes water", new, key="profile")
        self.assertFalse(again.replaced)
        self.assertNotEqual(again, first)

    def test_idempotent_retry_returns_the_same_id(self):
        m = self.memory("py_idempotent")
        m.create_space(dimension=2, metric="l2")
        first = m.add("x", [1.0, 2.0], request_id="req-1")
        again = m.add("x", [1.0, 2.0], request_id="req-1")
        self.assertEqual(first, again)
        self.assertEqual(m.get_space().episode_count, 1)

    def test_bad_input_raises_typed_errors_and_writes_nothing(self):
        m = self.memory("py_errors")
        m.create_space(dimension=3)
        with self.assertRaisesRegex(engram.InvalidArgumentError, "expects 3"):
            m.add("x", [1.0, 2.0])
        with self.assertRaisesRegex(engram.InvalidArgumentError, "finite"):
            m.add("x", [1.0, float("nan"), 0.0])
        with self.assertRaises(engram.InvalidArgumentError):
            m.add_many([dict(text="ok", embedding=[1, 0, 0]),
                        dict(text="bad", embedding=[1, 0, 0], agent="a" * 1000)])
        with self.assertRaisesRegex(engram.InvalidArgumentError, "k is 0"):
            m.search([1, 0, 0], k=0)
        with self.assertRaises(engram.AlreadyExistsError):
            m.create_space(dimension=3)
        with self.assertRaises(engram.NotFoundError):
            Memory(self.server.address, space="missing", agent="a").add("x", [1, 0, 0])
        self.assertEqual(m.get_space().episode_count, 0)

    def test_huge_names_are_bad_input_with_short_messages(self):
        huge = "s" * (1 << 20)
        with self.assertRaisesRegex(engram.InvalidArgumentError, "space name of 1048576 bytes"):
            Memory(self.server.address, space=huge, agent="a").get_space()
        with self.assertRaisesRegex(engram.InvalidArgumentError, "space name of 1048576 bytes"):
            Memory(self.server.address, space=huge, agent="a").create_space(dimension=2)
        with self.assertRaisesRegex(engram.InvalidArgumentError, "space name of 1048576 bytes"):
            Memory(self.server.address, space=huge, agent="a").search([1.0, 0.0])
        with engram.Admin(self.server.address) as admin:
            with self.assertRaisesRegex(engram.InvalidArgumentError,
                                        "checkpoint name of 1048576 bytes"):
                admin.checkpoint(huge)
        # A message that would echo a huge value is cut, never grows past 1 KiB.
        # (an embedder's name is echoed to say which one is not offered)
        with self.assertRaisesRegex(engram.InvalidArgumentError, "more bytes of this message cut"
                                    ) as raised:
            Memory(self.server.address, space="py_huge", agent="a").create_space(
                dimension=2, embedder="e" * (1 << 20))
        self.assertLess(len(str(raised.exception)), 1200)

    def test_invalid_utf8_is_invalid_argument_naming_the_field(self):
        m = self.memory("py_utf8")
        m.create_space(dimension=2)
        kept = m.add("kept", [1.0, 0.0])
        channel = grpc.insecure_channel(self.server.address)
        self.addCleanup(channel.close)
        marker, bad = b"MARKER", b"\xff\xfe\xc3(\x80\x80"  # same length

        def corrupt(request):
            raw = request.SerializeToString()
            self.assertEqual(raw.count(marker), 1)
            return raw.replace(marker, bad)

        cases = [
            ("Search", memory_pb2.SearchRequest(
                space="py_utf8", k=1, query=[1.0, 0.0],
                filter=memory_pb2.EpisodeFilter(agent_id="MARKER")),
             "engram.v1.EpisodeFilter.agent_id"),
            ("ListEpisodes", memory_pb2.ListEpisodesRequest(space="py_utf8", page_token="MARKER"),
             "engram.v1.ListEpisodesRequest.page_token"),
            ("GetEpisode", memory_pb2.GetEpisodeRequest(space="MARKER", id=kept),
             "engram.v1.GetEpisodeRequest.space"),
            ("PutEpisodes", memory_pb2.PutEpisodesRequest(space="py_utf8", episodes=[
                memory_pb2.EpisodeWrite(episode=memory_pb2.Episode(
                    agent_id="a", text="MARKER", embedding=[1.0, 0.0]))]),
             "engram.v1.Episode.text"),
        ]
        for method, request, field in cases:
            call = channel.unary_unary(f"/engram.v1.MemoryService/{method}")
            with self.assertRaises(grpc.RpcError) as raised:
                call(corrupt(request), timeout=10)
            self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT, method)
            self.assertIn(f"string field {field} holds invalid UTF-8", raised.exception.details())
        # Bytes that are no message at all are named as such.
        with self.assertRaises(grpc.RpcError) as raised:
            channel.unary_unary("/engram.v1.MemoryService/GetEpisode")(b"\x0a\x05ab", timeout=10)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("do not parse as that message", raised.exception.details())
        self.assertEqual([e.text for e in m.list()], ["kept"])  # nothing written

    def test_a_delete_of_too_many_ids_is_refused_whole(self):
        m = self.memory("py_delete_many")
        m.create_space(dimension=2)
        kept = m.add("kept", [1.0, 0.0])
        with self.assertRaisesRegex(engram.InvalidArgumentError,
                                    "names 1000001 ids; the limit is 10000"):
            m.delete([kept] + list(range(1 << 40, (1 << 40) + 1_000_000)))
        self.assertEqual(m.get(kept).text, "kept")

    def test_oversized_filters_are_refused_with_the_limit(self):
        m = self.memory("py_filters")
        m.create_space(dimension=2)
        m.add("x", [1.0, 0.0])
        huge = "a" * (1 << 20)
        cases = [
            (dict(agent=huge), "filter.agent_id is 1048576 bytes; the limit is 256"),
            (dict(session=huge), "filter.session_id is 1048576 bytes"),
            (dict(kinds=[f"k{i}" for i in range(100_000)]), "lists 100000 kinds; the limit is 64"),
            (dict(kinds=["k" * 65]), r"filter.kinds\[0\] is 65 bytes; the limit is 64"),
            (dict(where=[("n", "==", i) for i in range(100_000)]),
             "has 100000 predicates; the limit is 64"),
            (dict(where=[("n", "==", "v" * 20_000)]), "the limit is 16384"),
        ]
        for arguments, message in cases:
            for call in (lambda: m.search([1.0, 0.0], k=1, **arguments),
                         lambda: m.search(text="x", k=1, route="deliberate", **arguments),
                         lambda: list(m.list(**arguments))):
                with self.assertRaisesRegex(engram.InvalidArgumentError, message):
                    call()
            # The message is short: the rejected value is never echoed.
            try:
                m.search([1.0, 0.0], k=1, **arguments)
            except engram.InvalidArgumentError as error:
                self.assertLess(len(str(error)), 300)
        self.assertEqual(len(m.search([1.0, 0.0], k=1, kinds=["message"] * 64)), 1)

    def test_agents_are_separate_scopes(self):
        alice = self.memory("py_scopes", agent="alice")
        bob = self.memory("py_scopes", agent="bob")
        alice.create_space(dimension=2)
        alice.add("alice's", [1.0, 0.0])
        bob.add("bob's", [1.0, 0.0])
        self.assertEqual([h.episode.text for h in alice.search([1.0, 0.0], k=5)], ["alice's"])
        self.assertEqual(len(alice.search([1.0, 0.0], k=5, agent="")), 2)


class HistoryLimitTest(EngramdTestCase):
    """engramd with max_history_versions: updates and upserts by key keep
    the newest older versions; searches see only the current one."""

    engramd_config = "max_history_versions: 2\n"

    def test_updates_and_upserts_keep_the_newest_versions(self):
        m = self.memory("py_history_limit", agent="alice")
        m.create_space(dimension=3, metric="l2")
        plain = m.add("plain 1", [1.0, 0.0, 0.0])
        for v in range(2, 6):
            m.update(plain, text=f"plain {v}", embedding=[float(v), 0.0, 0.0])
        history = list(m.history(plain))
        self.assertEqual([v.version for v in history], [3, 4, 5])
        self.assertEqual([v.text for v in history], ["plain 3", "plain 4", "plain 5"])
        self.assertEqual([v.version for v in m.history(plain, page_size=1)], [3, 4, 5])

        keyed = m.add("keyed 1", [0.0, 1.0, 0.0], key="profile")
        for v in range(2, 5):
            self.assertEqual(m.add(f"keyed {v}", [0.0, float(v), 0.0], key="profile"), keyed)
        self.assertEqual([v.text for v in m.history(key="profile")],
                         ["keyed 2", "keyed 3", "keyed 4"])
        # Exact and the index both rank the current vectors alone (an old
        # version's vector would be nearer: [0, 1, 0] was keyed 1's).
        for exact in (True, False):
            hits = m.search([0.0, 1.0, 0.0], k=5, exact=exact)
            self.assertEqual([h.episode.text for h in hits], ["keyed 4", "plain 5"])
        self.assertEqual(m.get_space().episode_count, 2)


class AsyncMemoryTest(EngramdTestCase):
    """engram.aio.Memory runs the same operations over grpc.aio: its answers
    equal the blocking client's, errors included."""

    def test_the_asyncio_client_answers_like_the_blocking_one(self):
        import asyncio
        from engram import aio

        blocking = self.memory("py_aio", agent="alice")
        blocking.create_space(dimension=3, metric="l2")
        rng = np.random.default_rng(5)
        vectors = rng.normal(size=(40, 3)).astype(np.float32) * 7

        async def run():
            async with aio.Memory(self.server.address, space="py_aio", agent="alice") as m:
                await m.wait_ready()
                ids = await m.add_many([dict(text=f"v{i}", embedding=v, key=f"k{i}")
                                        for i, v in enumerate(vectors)])
                replaced = await m.add("v0 again", vectors[0], key="k0")
                got = await m.get(key="k3")
                hits = await m.search(vectors[3], k=5)
                exact = await m.search(vectors[3], k=5, exact=True)
                listed = [e.id async for e in m.list(page_size=7)]
                agents = [a async for a in m.list_agents()]
                updated = await m.update(ids[1], text="one", expected_version=1)
                history = await m.history(key="k1")
                try:
                    await m.get(123456789)
                    missing = None
                except engram.NotFoundError as error:
                    missing = error
                deleted = await m.delete(keys=["k2", "k4"])
                return (ids, replaced, got, hits, exact, listed, agents, updated, history,
                        missing, deleted)

        (ids, replaced, got, hits, exact, listed, agents, updated, history, missing,
         deleted) = asyncio.run(run())
        self.assertEqual(len(set(ids)), 40)
        self.assertTrue(replaced.replaced)
        self.assertEqual(replaced, ids[0])
        self.assertEqual(got, blocking.get(ids[3]))
        self.assertEqual([h.episode.id for h in hits], [h.episode.id for h in exact])
        self.assertEqual(hits[0].episode.id, ids[3])
        self.assertEqual(sorted(listed), sorted(ids))
        self.assertEqual(agents, ["alice"])
        self.assertEqual(updated.version, 2)
        self.assertEqual([v.text for v in history], ["v1", "one"])
        self.assertIsInstance(missing, engram.NotFoundError)
        self.assertEqual(deleted, 2)
        self.assertEqual(blocking.get_space().episode_count, 38)


class FlakyMemoryService(memory_pb2_grpc.MemoryServiceServicer):
    """PutEpisodes that fails with UNAVAILABLE `failures` times, then
    answers as engramd does for a batch its first attempt already applied:
    the same ids, deduplicated."""

    def __init__(self, failures):
        self.failures = failures
        self.requests = []

    def PutEpisodes(self, request, context):
        self.requests.append(request)
        if len(self.requests) <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")
        n = len(request.episodes)
        return memory_pb2.PutEpisodesResponse(ids=list(range(1, n + 1)),
                                              deduplicated=[True] * n)


class WriteRetryTest(unittest.TestCase):
    """The client retries an unreachable write with request ids it generated
    itself, so the retry is applied at most once."""

    def serve(self, failures):
        service = FlakyMemoryService(failures)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        memory_pb2_grpc.add_MemoryServiceServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.addCleanup(server.stop, None)
        m = Memory(f"127.0.0.1:{port}", space="s", agent="a", timeout=5)
        self.addCleanup(m.close)
        return service, m

    def test_unavailable_is_retried_with_the_same_generated_ids(self):
        service, m = self.serve(failures=2)
        ids = m.add_many([dict(text="one", embedding=[1.0]),
                          dict(text="two", embedding=[1.0], request_id="mine"),
                          dict(text="three", embedding=[1.0])])
        self.assertEqual(len(service.requests), 3)
        sent = [[e.request_id for e in r.episodes] for r in service.requests]
        self.assertEqual(sent[0], sent[1])
        self.assertEqual(sent[0], sent[2])
        self.assertEqual(sent[0][1], "mine")
        self.assertEqual([len(sent[0][0]), len(sent[0][2])], [32, 32])  # uuid4, hex
        self.assertNotEqual(sent[0][0], sent[0][2])
        # The generated ids' dedup is this call's own first attempt; the
        # caller's own request_id reports what the server said.
        self.assertEqual([i.deduplicated for i in ids], [False, True, False])

    def test_the_error_carries_the_ids_to_retry_with(self):
        service, m = self.serve(failures=5)
        with self.assertRaises(engram.UnavailableError) as raised:
            m.add_many([dict(text="one", embedding=[1.0])])
        self.assertEqual(len(service.requests), 3)  # write_attempts
        self.assertEqual(raised.exception.request_ids,
                         [service.requests[0].episodes[0].request_id])
        service, m = self.serve(failures=1)
        m.write_attempts = 1
        with self.assertRaises(engram.UnavailableError):
            m.add("one", [1.0])
        self.assertEqual(len(service.requests), 1)


if __name__ == "__main__":
    unittest.main()
