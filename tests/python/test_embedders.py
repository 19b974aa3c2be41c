"""Embedders inside engramd (embed/embedder.h), through the Python client:
the "openai" embedder against a stub endpoint on loopback (batching, the API
key, retries, every failure a clear status with nothing written), text-only
writes, updates and searches, and the "static" embedder's word vectors when
scripts/fetch-word-vectors.sh has fetched them (skipped otherwise).

Run by ctest with ENGRAMD=<path to engramd> and PYTHONPATH=<build>/python.
"""

import math
import os
import shutil
import tempfile
import time
import unittest

import engram
from engramd_fixture import EngramdProcess, EngramdTestCase
from stub_embeddings import StubEmbeddings, stub_vector

DIMENSION = 8
API_KEY = "sk-engram-test-secret-4242"


class OpenAiEmbedderTest(EngramdTestCase):
    @classmethod
    def setUpClass(cls):
        cls.stub = StubEmbeddings(DIMENSION)
        cls.engramd_config = (
            "embedders:\n"
            "  openai:\n"
            f"    url: {cls.stub.url}\n"
            "    model: stub-model\n"
            f"    dimension: {DIMENSION}\n"
            "    api_key_env: ENGRAM_TEST_EMBEDDER_KEY\n"
            "    batch_size: 4\n"
            "    timeout_ms: 400\n"
            "    max_retries: 2\n"
            "    retry_backoff_ms: 10\n")
        cls.engramd_env = {"ENGRAM_TEST_EMBEDDER_KEY": API_KEY}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.stub.stop()

    def setUp(self):
        self.stub.reset()

    def space(self, name, **kwargs):
        # One attempt per write: these tests script the endpoint's answers
        # call by call, and the client would retry an embedder's UNAVAILABLE.
        m = self.memory(name, write_attempts=1)
        m.create_space(embedder="openai", **kwargs)
        return m

    def assert_vector(self, actual, text):
        self.assertEqual(len(actual), DIMENSION)
        for a, e in zip(actual, stub_vector(text, DIMENSION)):
            self.assertAlmostEqual(a, e, places=5)

    def test_space_takes_the_embedders_dimension(self):
        m = self.space("dims")
        self.assertEqual(m.get_space().dimension, DIMENSION)
        self.assertEqual(m.get_space().embedder, "openai")
        self.assertEqual(self.stub.requests, [])  # creating a space calls nothing

    def test_text_only_episodes_are_embedded_in_batches_with_the_key(self):
        m = self.space("batches")
        texts = [f"note number {i} about tea" for i in range(10)]
        ids = m.add_many([{"text": t} for t in texts])
        self.assertEqual([len(body["input"]) for body, _ in self.stub.requests], [4, 4, 2])
        sent = [t for body, _ in self.stub.requests for t in body["input"]]
        self.assertEqual(sent, texts)
        for body, headers in self.stub.requests:
            self.assertEqual(body["model"], "stub-model")
            self.assertEqual(body["encoding_format"], "float")
            self.assertEqual(headers.get("Authorization"), f"Bearer {API_KEY}")
        for episode_id, text in zip(ids, texts):
            self.assert_vector(m.get(episode_id).embedding, text)
        self.assert_vector(m.embed("a query"), "a query")

    def test_episodes_with_vectors_are_not_sent(self):
        m = self.space("mixed")
        own = [float(j + 1) for j in range(DIMENSION)]
        ids = m.add_many([{"text": "has its own vector", "embedding": own},
                          {"text": "needs one"}])
        self.assertEqual([body["input"] for body, _ in self.stub.requests], [["needs one"]])
        self.assertEqual(m.get(ids[0]).embedding, own)
        self.assert_vector(m.get(ids[1]).embedding, "needs one")

    def test_text_search_is_embedded_and_hybrid(self):
        m = self.space("search")
        texts = ["green tea every morning", "black coffee at noon", "a walk by the river",
                 "tea ceremony in kyoto", "river boats at night"]
        ids = m.add_many([{"text": t} for t in texts])
        self.stub.reset()
        results = m.search(text="tea ceremony in kyoto", k=3, route="fast")
        self.assertEqual(results.route, "hybrid")
        self.assertEqual(results[0].episode.id, ids[3])
        vector_rank = [s for s in results[0].sources if s.source == "vector"]
        self.assertEqual(vector_rank[0].rank, 1)  # the same text embeds to the same vector
        self.assertAlmostEqual(vector_rank[0].score, 1.0, places=5)
        self.assertIn("embed", [stage.name for stage in results.stages])
        self.assertEqual([body["input"] for body, _ in self.stub.requests],
                         [["tea ceremony in kyoto"]])
        # A query with no words for BM25 is still embedded: the vector route alone.
        self.stub.then(("ok",))
        only_vector = m.search(text="!!!", k=2, route="fast")
        self.assertEqual(only_vector.route, "index")
        self.assertEqual(len(only_vector), 2)

    def test_embedded_text_queries_match_exact_under_filters(self):
        # Inner product on the stub's vectors, which are not unit length
        # (their norm grows with the word count); most fields left to their
        # defaults; filters that keep all, few and none.
        m = self.space("exact-ip", metric="ip")
        words = ["tea", "river", "music", "paris", "code", "garden", "winter", "train"]
        episodes = []
        for i in range(60):
            text = " ".join(words[(i * j) % len(words)] for j in range(1 + i % 5))
            episode = {"text": f"{text} n{i}",  # unique: no two vectors tie
                       "agent": "alice" if i % 3 else "bob"}
            if i in (7, 31):
                episode["kind"] = "rare"
            episodes.append(episode)
        m.add_many(episodes)
        for query in ["tea river", "winter train garden code", "music"]:
            vector = m.embed(query)
            for filters in [{}, {"agent": ""}, {"kinds": ["rare"]}, {"agent": "", "kinds": ["rare"]},
                            {"kinds": ["absent"]}]:
                with self.subTest(query=query, filters=filters):
                    hybrid = m.search(text=query, k=5, **filters)
                    exact = m.search(vector, k=50, exact=True, **filters)
                    self.assertEqual(len(hybrid), min(5, len(exact)))
                    for hit in hybrid:
                        for source in hit.sources:
                            if source.source != "vector":
                                continue
                            expected = exact[source.rank - 1]
                            self.assertAlmostEqual(source.score, expected.score, places=3)
                            # Equal scores may come in either order.
                            tied = {e.episode.id for e in exact
                                    if abs(e.score - expected.score) < 1e-4}
                            self.assertIn(hit.episode.id, tied)
                    if filters.get("kinds") == ["absent"]:
                        self.assertEqual(len(hybrid), 0)

    def test_update_of_text_is_re_embedded(self):
        m = self.space("update")
        episode_id = m.add("first words")
        self.stub.reset()
        updated = m.update(episode_id, text="second words entirely")
        self.assert_vector(updated.embedding, "second words entirely")
        self.assertEqual(len(self.stub.requests), 1)
        m.update(episode_id, kind="note")  # the text stays: no call
        self.assertEqual(len(self.stub.requests), 1)
        own = [1.0] * DIMENSION
        self.assertEqual(m.update(episode_id, text="third", embedding=own).embedding, own)
        self.assertEqual(len(self.stub.requests), 1)  # the caller's vector wins

    def test_retries_after_503_and_429(self):
        m = self.space("retry")
        self.stub.then(("status", 503, '{"error": "warming up"}', {}),
                       ("status", 429, '{"error": "slow down"}', {"Retry-After": "0"}))
        episode_id = m.add("eventually embedded")
        self.assertEqual(len(self.stub.requests), 3)
        self.assert_vector(m.get(episode_id).embedding, "eventually embedded")

    def assert_fails_writing_nothing(self, m, error, message_part):
        before = m.get_space().episode_count
        ids_before = [e.id for e in m.list()]
        with self.assertRaises(error) as raised:
            m.add_many([{"text": "one"}, {"text": "two"}])
        self.assertIn(message_part, str(raised.exception))
        self.assertNotIn(API_KEY, str(raised.exception))
        self.assertEqual(m.get_space().episode_count, before)
        self.assertEqual([e.id for e in m.list()], ids_before)
        self.stub.reset()

    def test_failures_are_clear_statuses_and_write_nothing(self):
        m = self.space("failures")
        cases = [
            ([("status", 500, '{"error": {"message": "model crashed"}}', {})] * 3,
             engram.UnavailableError, "HTTP 500 (model crashed) after 3 attempts"),
            ([("raw", "this is not json")], engram.UnavailableError, "malformed answer: not JSON"),
            ([("raw", '{"data": [{"embedding": [1, 2]}]}')], engram.UnavailableError,
             "1 vectors for 2 texts"),
            ([("raw", '{"data": [{"embedding": "x"}, {"embedding": []}]}')],
             engram.UnavailableError, "no \"embedding\" array"),
            ([("raw", '{"vectors": []}')], engram.UnavailableError, "no \"data\" array"),
            ([("dimension", DIMENSION - 1)], engram.UnavailableError,
             f"vectors of {DIMENSION - 1} dimensions; the space has {DIMENSION}"),
            ([("status", 400, '{"error": {"message": "input too long"}}', {})],
             engram.InvalidArgumentError, "refused the input (HTTP 400): input too long"),
            ([("status", 401, '{"error": "bad key"}', {})], engram.UnavailableError,
             "HTTP 401 (check the API key)"),
            ([("status", 403, f'{{"error": "key {API_KEY} revoked"}}', {})],
             engram.UnavailableError, "key [api key] revoked"),  # an echoed key is blanked
            ([("sleep", 1.0)] * 3, engram.UnavailableError, "no answer within 400 ms after 3"),
        ]
        for script, error, message_part in cases:
            with self.subTest(message_part):
                self.stub.then(*script)
                self.assert_fails_writing_nothing(m, error, message_part)

    def test_an_answer_past_the_deadline_writes_nothing(self):
        m = self.space("deadline")
        slow = engram.Memory(self.server.address, space="deadline", agent="alice", timeout=0.2,
                             write_attempts=1)
        self.addCleanup(slow.close)
        self.stub.then(("sleep", 0.35))  # within timeout_ms, past the call's deadline
        with self.assertRaises(engram.DeadlineExceededError):
            slow.add("too slow")
        time.sleep(0.5)  # the stub has answered by now
        self.assertEqual(m.get_space().episode_count, 0)

    def test_a_failing_query_embedding_fails_the_search(self):
        m = self.space("query-failure")
        m.add("stored text")
        self.stub.then(*[("status", 502, "bad gateway", {})] * 3)
        with self.assertRaises(engram.UnavailableError) as raised:
            m.search(text="stored text")
        self.assertIn("HTTP 502", str(raised.exception))

    def test_space_errors(self):
        m = self.memory("errors")
        with self.assertRaises(engram.InvalidArgumentError) as raised:
            m.create_space(embedder="word2vec")
        self.assertIn("embedder 'word2vec' is not offered by this server (offered: openai)",
                      str(raised.exception))
        with self.assertRaises(engram.InvalidArgumentError) as raised:
            m.create_space(embedder="static")
        self.assertIn("not offered", str(raised.exception))
        with self.assertRaises(engram.InvalidArgumentError) as raised:
            m.create_space(16, embedder="openai")
        self.assertIn("space dimension 16 does not match embedder 'openai'", str(raised.exception))
        with self.assertRaises(engram.InvalidArgumentError):
            m.create_space()  # neither a dimension nor an embedder

    def test_a_space_without_embedder_needs_vectors(self):
        m = self.memory("plain")
        m.create_space(DIMENSION)
        with self.assertRaises(engram.InvalidArgumentError) as raised:
            m.add("no vector here")
        self.assertIn("space 'plain' has no embedder, so each episode needs an embedding of 8",
                      str(raised.exception))
        m.add("with a vector", [1.0] * DIMENSION)
        with self.assertRaises(engram.InvalidArgumentError) as raised:
            m.embed("no embedder")
        self.assertIn("space 'plain' has no embedder", str(raised.exception))
        self.assertEqual(m.search(text="vector", route="fast").route, "lexical")  # no embedder: BM25 alone
        self.assertEqual(self.stub.requests, [])
        m2 = self.space("needs-text")
        with self.assertRaises(engram.InvalidArgumentError) as raised:
            m2.add("")
        self.assertIn("no embedding and no text", str(raised.exception))


class EmbedderNoLongerOfferedTest(unittest.TestCase):
    """A space made with an embedder, served by an engramd whose
    configuration no longer sets it up: vector, text and hybrid searches and
    writes with vectors work; only text-only calls fail, and say why."""

    def test_only_text_only_calls_fail(self):
        stub = StubEmbeddings(DIMENSION)
        self.addCleanup(stub.stop)
        data_dir = tempfile.mkdtemp(prefix="engram-embedder-gone-")
        self.addCleanup(shutil.rmtree, data_dir, True)
        config = f"embedders:\n  openai:\n    url: {stub.url}\n    dimension: {DIMENSION}\n"
        server = EngramdProcess(config, data_dir=data_dir)
        with engram.Memory(server.address, space="gone", agent="a") as m:
            m.create_space(embedder="openai")
            first = m.add("embedded by the endpoint")
        self.assertEqual(server.stop(), 0)

        server = EngramdProcess("", data_dir=data_dir)  # no embedders now
        try:
            with engram.Memory(server.address, space="gone", agent="a") as m:
                self.assertEqual(m.get_space().embedder, "openai")
                vector = stub_vector("embedded by the endpoint", DIMENSION)
                self.assertEqual(m.search(vector, k=1)[0].episode.id, first)
                hybrid = m.search(vector, text="endpoint", k=1, route="fast")
                self.assertEqual((hybrid.route, hybrid[0].episode.id), ("hybrid", first))
                m.add("brings its own vector", [1.0] * DIMENSION)
                for call in (lambda: m.add("text alone"), lambda: m.search(text="endpoint")):
                    with self.assertRaises(engram.FailedPreconditionError) as raised:
                        call()
                    self.assertIn("embeds with 'openai', which this server's configuration "
                                  "does not set up", str(raised.exception))
        finally:
            self.assertEqual(server.stop(), 0)


WORD_VECTORS = os.environ.get(
    "ENGRAM_WORD_VECTORS", os.path.expanduser("~/.cache/engram/wink-100d.engramwv"))


@unittest.skipUnless(os.path.exists(WORD_VECTORS),
                     f"no word vectors at {WORD_VECTORS}: run scripts/fetch-word-vectors.sh")
class StaticEmbedderTest(EngramdTestCase):
    engramd_config = f"embedders:\n  static:\n    path: {WORD_VECTORS}\n"

    def test_text_only_memory(self):
        m = self.memory("static")
        space = m.create_space(embedder="static")
        self.assertEqual(space.dimension, 100)
        texts = ["I like green tea in the morning", "The stock market fell sharply today",
                 "My dog loves chasing the ball in the park", "Paris is the capital of France",
                 "She plays the violin in an orchestra"]
        ids = m.add_many([{"text": t} for t in texts])
        embedding = m.get(ids[0]).embedding
        self.assertAlmostEqual(math.sqrt(sum(v * v for v in embedding)), 1.0, places=5)
        # Queries that share no content word with their answer: only the
        # vectors can find it (BM25 matches stop words such as "of").
        for query, expected in [("a cup of coffee at breakfast", 0),
                                ("shares and investors lost money", 1),
                                ("puppy playing outside", 2),
                                ("french city", 3),
                                ("musician performing a concert", 4)]:
            with self.subTest(query):
                results = m.search(text=query, k=5, route="fast")
                self.assertEqual(results.route, "hybrid")
                by_vector = sorted((s.rank, h.episode.id) for h in results
                                   for s in h.sources if s.source == "vector")
                self.assertEqual(by_vector[0][1], ids[expected])


if __name__ == "__main__":
    unittest.main()
