"""Text search through engramd checked against an independent BM25.

The reference below is written from the formula (storage/lexical_index.h
states it) and shares no code with the server: it takes each episode's
terms from engramd's AnalyzeText (the same tokens the index holds) and
ranks in Python. Every search is compared with it on unfriendly text (mixed
case, compatibility forms, accents, Chinese, Thai, numbers, punctuation,
empty texts), with every filter, after updates and deletes, on LoCoMo's
real dialogue when ../shared/data is present, and for hybrid search against
reciprocal rank fusion computed here from the exact vector route.

Run by ctest with ENGRAMD=<path to engramd> and PYTHONPATH=<build>/python.
"""

import math
import os
import unittest

import numpy as np

import engram
from engramd_fixture import EngramdTestCase

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")

VOCABULARY = [
    "tea", "Tea", "TEA", "ＴＥＡ", "green", "matcha", "coffee", "café", "Cafe", "naïve",
    "Straße", "strasse", "ﬁsh", "meeting", "meetings", "Alice", "alice's", "Bob", "2024",
    "05-07", "v1.2.3", "id_42", "e-mail", "我喜欢喝绿茶", "绿茶", "ฉันชอบดื่มชาเขียว", "東京",
    "Москва", "москва", "the", "a", "of", "and", "...", "!!", "—", "☺", "#tag", "@user",
]


class Bm25Reference:
    """BM25 with Lucene's non-negative idf over each scope's own statistics."""

    def __init__(self, k1=1.2, b=0.75):
        self.k1, self.b = k1, b
        self.docs = {}  # id -> dict(terms, agent, session, kind, time, meta)

    def scores(self, query_terms, agent=""):
        scope = {i: d for i, d in self.docs.items() if not agent or d["agent"] == agent}
        if not scope:
            return {}
        n = len(scope)
        average = sum(len(d["terms"]) for d in scope.values()) / n
        scores = {}
        for term in sorted(set(query_terms)):
            holders = [(i, d["terms"].count(term)) for i, d in scope.items() if term in d["terms"]]
            if not holders:
                continue
            idf = math.log(1 + (n - len(holders) + 0.5) / (len(holders) + 0.5))
            for i, tf in holders:
                length = len(scope[i]["terms"])
                norm = self.k1 * (1 - self.b + self.b * length / average)
                scores[i] = scores.get(i, 0.0) + idf * tf * (self.k1 + 1) / (tf + norm)
        return scores

    def top(self, query_terms, k, agent="", keep=lambda doc: True):
        ranked = sorted(((s, i) for i, s in self.scores(query_terms, agent).items()
                         if keep(self.docs[i])), key=lambda x: (-x[0], x[1]))
        return ranked[:k]


class TextSearchTest(EngramdTestCase):
    def assertSameRanking(self, hits, expected, context):
        """Hits equal the reference's (score, id) list: same scores in order,
        and the same ids except where scores tie."""
        self.assertEqual(len(hits), len(expected), context)
        for position, (hit, (score, doc_id)) in enumerate(zip(hits, expected)):
            self.assertAlmostEqual(hit.score, score, delta=1e-4 * max(1.0, score),
                                   msg=f"{context}: score at {position}")
            if hit.episode.id != doc_id:
                tied = [i for s, i in expected if abs(s - score) <= 1e-5 * max(1.0, score)]
                self.assertIn(hit.episode.id, tied, f"{context}: id at {position}")

    def load(self, m, reference, texts, rng, dimension=6):
        """Stores the texts with random attributes and records each episode's
        analyzed terms in the reference."""
        episodes = []
        for text in texts:
            episode = dict(
                text=text, embedding=(rng.standard_normal(dimension) * rng.uniform(0.1, 9)).tolist(),
                agent=f"agent{rng.integers(3)}", session=f"s{rng.integers(2)}",
                event_time_us=int(rng.integers(1, 1000)),
                metadata={"n": int(rng.integers(10))})
            if rng.random() < 0.5:
                episode["kind"] = "fact"  # else left to the server's default, "message"
            episodes.append(episode)
        ids = []
        for start in range(0, len(episodes), 200):
            ids += m.add_many(episodes[start:start + 200])
        for episode_id, episode in zip(ids, episodes):
            reference.docs[episode_id] = dict(
                terms=m.analyze(episode["text"]), agent=episode["agent"],
                session=episode["session"], kind=episode.get("kind", "message"),
                time=episode["event_time_us"], n=episode["metadata"]["n"],
                embedding=episode["embedding"])
        return ids

    def check_queries(self, m, reference, queries, context, k=10):
        filters = [
            ("space", {}, lambda d: True),
            ("agent", dict(agent="agent1"), None),
            ("agent+session", dict(agent="agent2", session="s1"),
             lambda d: d["session"] == "s1"),
            ("kinds", dict(kinds=["fact"]), lambda d: d["kind"] == "fact"),
            ("default kind", dict(kinds=["message"]), lambda d: d["kind"] == "message"),
            ("rare", dict(where=[("n", "==", 3)], session="s0", agent="agent0"),
             lambda d: d["n"] == 3 and d["session"] == "s0"),
            ("none", dict(kinds=["no-such-kind"]), lambda d: False),
            ("time", dict(since_us=200, until_us=600), lambda d: 200 <= d["time"] < 600),
            ("metadata", dict(where=[("n", ">=", 7)]), lambda d: d["n"] >= 7),
        ]
        checked = 0
        for query in queries:
            terms = m.analyze(query)
            if not terms:
                continue
            for name, arguments, keep in filters:
                agent = arguments.get("agent", "")
                expected = reference.top(terms, k, agent, keep or (lambda d: True))
                hits = m.search(text=query, k=k, route="fast", **{"agent": "", **arguments})
                self.assertEqual(hits.route, "lexical")
                self.assertEqual(sorted(hits.query_terms), sorted(set(terms)))
                self.assertSameRanking(hits, expected, f"{context} {name} {query!r}")
                checked += 1
        self.assertGreater(checked, 0)

    def test_unfriendly_text_matches_the_reference_through_every_filter_and_write(self):
        rng = np.random.default_rng(7)
        m = self.memory("py_text_unfriendly")
        m.create_space(dimension=6, metric="l2")
        texts = ["" if rng.random() < 0.05 else
                 " ".join(rng.choice(VOCABULARY, size=rng.integers(1, 12)))
                 for _ in range(400)]
        reference = Bm25Reference()
        ids = self.load(m, reference, texts, rng)
        queries = [" ".join(rng.choice(VOCABULARY, size=rng.integers(1, 5))) for _ in range(25)]
        queries += ["zebra tea", "绿茶", "MOSKVA москва", "fish", "strasse"]
        self.check_queries(m, reference, queries, "fresh")

        # Updates replace postings; deletes (by id, by agent session) remove them.
        for episode_id in ids[:40]:
            text = " ".join(rng.choice(VOCABULARY, size=3))
            m.update(episode_id, text=text)
            reference.docs[episode_id]["terms"] = m.analyze(text)
        m.delete(ids[40:60])
        for episode_id in ids[40:60]:
            del reference.docs[episode_id]
        m.forget_agent("agent0", session="s0")
        for episode_id in [i for i, d in reference.docs.items()
                           if d["agent"] == "agent0" and d["session"] == "s0"]:
            del reference.docs[episode_id]
        m.forget_agent("agent2")
        for episode_id in [i for i, d in reference.docs.items() if d["agent"] == "agent2"]:
            del reference.docs[episode_id]
        self.check_queries(m, reference, queries[:10], "after writes")

    def test_stemming_and_bm25_parameters_are_per_space(self):
        m = self.memory("py_text_stemmed")
        created = m.create_space(dimension=2, stem_language="english", bm25_k1=2.0, bm25_b=0.3)
        self.assertEqual((created.stem_language, round(created.bm25_k1, 3),
                          round(created.bm25_b, 3)), ("english", 2.0, 0.3))
        self.assertIn("stem-english", created.tokenizer)
        self.assertEqual(m.analyze("Running meetings"), ["run", "meet"])
        rng = np.random.default_rng(3)
        reference = Bm25Reference(k1=2.0, b=0.3)
        self.load(m, reference, [" ".join(rng.choice(VOCABULARY, size=rng.integers(1, 9)))
                                 for _ in range(150)], rng, dimension=2)
        self.check_queries(m, reference, ["meeting tea", "cafe naive", "the green fish"],
                           "stemmed")

    def test_hybrid_is_reciprocal_rank_fusion_of_the_two_lists(self):
        rng = np.random.default_rng(11)
        m = self.memory("py_text_hybrid")
        m.create_space(dimension=6, metric="ip")
        reference = Bm25Reference()
        self.load(m, reference, [" ".join(rng.choice(VOCABULARY, size=rng.integers(1, 10)))
                                 for _ in range(300)], rng)
        for trial in range(8):
            query = (rng.standard_normal(6) * 3).tolist()
            text = " ".join(rng.choice(VOCABULARY, size=2))
            k = [1, 5, 10, 60][trial % 4]
            depth = max(k, 50)
            vector = m.search(query, k=depth, agent="", exact=True)
            lexical = reference.top(m.analyze(text), depth)
            fused = {}
            for source, ranked in (("vector", [(h.score, h.episode.id) for h in vector]),
                                   ("lexical", lexical)):
                for rank, (score, doc_id) in enumerate(ranked, start=1):
                    entry = fused.setdefault(doc_id, [0.0, []])
                    entry[0] += 1 / (60 + rank)
                    entry[1].append((source, rank))
            expected = sorted(fused.items(), key=lambda x: (-x[1][0], x[0]))[:k]
            hits = m.search(query, k=k, text=text, agent="", exact=True)
            self.assertEqual(hits.route, "hybrid")
            self.assertIn("fuse", [stage.name for stage in hits.stages])
            self.assertEqual(len(hits), len(expected))
            for hit, (doc_id, (score, sources)) in zip(hits, expected):
                self.assertAlmostEqual(hit.score, score, places=6)
                got = [(s.source, s.rank) for s in hit.sources]
                if hit.episode.id == doc_id:
                    self.assertEqual(got, sources)

    def test_locomo_dialogue_matches_the_reference(self):
        path = os.path.join(SHARED_DATA, "locomo10.json")
        if not os.path.exists(path):
            self.skipTest(f"{path} is absent (see ../shared/data/README.md)")
        import json
        with open(path) as f:
            samples = json.load(f)[:2]
        m = self.memory("py_text_locomo")
        m.create_space(dimension=4)
        reference = Bm25Reference()
        rng = np.random.default_rng(5)
        texts, questions = [], []
        for sample in samples:
            conversation = sample["conversation"]
            for key, turns in conversation.items():
                if key.startswith("session_") and isinstance(turns, list):
                    texts += [f"{t['speaker']}: {t.get('text', '')}" for t in turns]
            questions += [qa["question"] for qa in sample["qa"]][:20]
        self.load(m, reference, texts, rng, dimension=4)
        self.check_queries(m, reference, questions, "locomo")

    def test_bad_text_queries_are_refused_and_change_nothing(self):
        m = self.memory("py_text_errors")
        m.create_space(dimension=2)
        m.add("green tea", [1.0, 0.0], agent="a")
        with self.assertRaises(engram.InvalidArgumentError) as caught:
            m.search(text="... !!!", agent="")
        self.assertIn("no words", str(caught.exception))
        with self.assertRaises(engram.InvalidArgumentError) as caught:
            m.search(agent="")
        self.assertIn("query vector, query_text, or both", str(caught.exception))
        with self.assertRaises(engram.InvalidArgumentError):
            m.search(text="tea " * 100000, agent="")
        with self.assertRaises(engram.InvalidArgumentError) as caught:
            m.search(text=" ".join(f"w{i}" for i in range(1100)), agent="")
        self.assertIn("distinct words", str(caught.exception))
        with self.assertRaises(engram.InvalidArgumentError) as caught:
            m.create_space(dimension=2, name="py_text_bad", stem_language="klingon")
        self.assertIn("english", str(caught.exception))
        with self.assertRaises(engram.InvalidArgumentError):
            m.create_space(dimension=2, name="py_text_bad", bm25_b=2.0)
        with self.assertRaises(engram.NotFoundError):
            self.memory("py_text_bad").search(text="tea")
        # Punctuation-only text in a hybrid search leaves the vector side.
        hits = m.search([1.0, 0.0], text="?!", agent="", route="fast")
        self.assertEqual(hits.route, "hybrid")
        self.assertEqual([h.episode.text for h in hits], ["green tea"])
        self.assertEqual(m.get_space().episode_count, 1)


if __name__ == "__main__":
    unittest.main()
