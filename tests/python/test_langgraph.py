"""Contract test of engram.integrations.langgraph.EngramStore against a live
engramd: the behaviour LangGraph documents for BaseStore (its reference
pages for Item, SearchItem, the ops and the helpers), written down here as
expectations, since LangGraph itself is not installed. Searches are checked
against the exact answer computed here from the stored values.

Run by ctest with ENGRAMD=<path to engramd> and PYTHONPATH=<build>/python.
"""

import asyncio
import hashlib
import math
import time
from datetime import datetime, timezone

import numpy as np

from engram import Memory
from engram.integrations.langgraph import (EngramStore, GetOp, InvalidNamespaceError, Item,
                                           ListNamespacesOp, MatchCondition, PutOp, SearchItem,
                                           SearchOp)
from engramd_fixture import EngramdTestCase

DIMS = 16


def embed(texts):
    """A deterministic embedding: words hashed into 16 dimensions, with
    counts, so vectors are far from unit length and similar texts are near."""
    vectors = []
    for text in texts:
        v = np.zeros(DIMS)
        for word in text.lower().split():
            digest = hashlib.sha256(word.strip('",.{}:').encode()).digest()
            v[digest[0] % DIMS] += 1 + digest[1] % 3
        vectors.append(list(v + 0.01))
    return vectors


def cosine(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


class LangGraphStoreContractTest(EngramdTestCase):
    def store(self, space, **options):
        store = EngramStore(self.server.address, space=space, **options)
        self.addCleanup(store.close)
        return store

    def test_put_get_delete_follow_the_documented_item_shape(self):
        store = self.store("lg_items")
        before = datetime.now(timezone.utc)
        store.put(("users", "42"), "prefs", {"theme": "dark", "nested": {"a": [1, 2]}})
        item = store.get(("users", "42"), "prefs")
        self.assertIsInstance(item, Item)
        self.assertEqual(item.value, {"theme": "dark", "nested": {"a": [1, 2]}})
        self.assertEqual((item.key, item.namespace), ("prefs", ("users", "42")))
        self.assertIsNotNone(item.created_at.tzinfo)
        self.assertLessEqual(abs((item.created_at - before).total_seconds()), 5)
        self.assertEqual(item.dict()["namespace"], ["users", "42"])

        # A second put upserts: same item, new value, created_at kept.
        time.sleep(0.01)
        store.put(("users", "42"), "prefs", {"theme": "light"})
        again = store.get(("users", "42"), "prefs")
        self.assertEqual(again.value, {"theme": "light"})
        self.assertEqual(again.created_at, item.created_at)
        self.assertGreater(again.updated_at, item.updated_at)
        # Engram keeps the replaced versions.
        history = Memory(self.server.address, space="lg_items").history(
            key="prefs", agent="users.42")
        self.assertEqual([v.version for v in history], [1, 2])

        self.assertIsNone(store.get(("users", "42"), "missing"))
        self.assertIsNone(store.get(("users", "43"), "prefs"), "keys belong to a namespace")
        store.delete(("users", "42"), "prefs")
        self.assertIsNone(store.get(("users", "42"), "prefs"))
        store.delete(("users", "42"), "prefs")  # deleting what is gone is not an error

    def test_invalid_namespaces_are_refused(self):
        store = self.store("lg_namespaces")
        for namespace in [(), ("a.b",), ("",), ("langgraph", "x"), ("ok", 3)]:
            with self.assertRaises(InvalidNamespaceError, msg=repr(namespace)):
                store.put(namespace, "k", {"v": 1})
        self.assertTrue(issubclass(InvalidNamespaceError, ValueError))

    def test_search_by_prefix_and_filter_agrees_with_exact(self):
        store = self.store("lg_filters")
        rng = np.random.default_rng(7)
        colors = ["red", "green", "blue"]
        stored = {}
        ops = []
        for i in range(60):
            namespace = ("users", str(i % 3), "memories") if i % 4 else ("docs", str(i % 2))
            value = {"color": colors[i % 3], "score": round(float(rng.uniform(0, 10)), 3),
                     "n": i, "flag": i % 2 == 0, "tags": ["t"]}
            ops.append(PutOp(namespace, f"item-{i}", value))
            stored[(namespace, f"item-{i}")] = value
        self.assertEqual(store.batch(ops), [None] * 60)

        def exact(prefix, condition):
            return sorted(key for (namespace, key), value in stored.items()
                          if namespace[:len(prefix)] == prefix and condition(value))

        cases = [
            ((), None, lambda v: True),
            (("users",), None, lambda v: True),
            (("users", "1"), None, lambda v: True),
            (("docs",), {"color": "red"}, lambda v: v["color"] == "red"),
            ((), {"score": {"$gt": 4.99}}, lambda v: v["score"] > 4.99),
            ((), {"score": {"$gte": 3.0}, "color": "red"},
             lambda v: v["score"] >= 3.0 and v["color"] == "red"),
            (("users",), {"n": {"$lt": 20, "$ne": 5}}, lambda v: v["n"] < 20 and v["n"] != 5),
            ((), {"n": {"$lte": 7}, "flag": True}, lambda v: v["n"] <= 7 and v["flag"]),
            ((), {"color": {"$eq": "blue"}}, lambda v: v["color"] == "blue"),
            ((), {"color": "purple"}, lambda v: False),
        ]
        for prefix, filter, condition in cases:
            found = store.search(prefix, filter=filter, limit=100)
            self.assertTrue(all(isinstance(item, SearchItem) and item.score is None
                                for item in found))
            self.assertEqual(sorted(item.key for item in found), exact(prefix, condition),
                             f"{prefix} {filter}")
            for item in found:
                self.assertEqual(item.value, stored[(item.namespace, item.key)])
        # limit and offset page through the same order.
        everything = [item.key for item in store.search((), limit=100)]
        self.assertEqual(len(everything), 60)
        pages = [item.key for offset in range(0, 60, 7)
                 for item in store.search((), limit=7, offset=offset)]
        self.assertEqual(pages, everything)
        self.assertEqual(len(store.search(("users",), limit=5)), 5)
        with self.assertRaises(ValueError):
            store.search((), filter={"n": {"$regex": "x"}})
        with self.assertRaises(ValueError):
            store.search((), filter={"tags": ["t"]})

    def test_query_search_ranks_by_cosine_like_exact(self):
        store = self.store("lg_vectors", index={"dims": DIMS, "embed": embed,
                                                "fields": ["text"]})
        texts = ["likes green tea in the morning", "drinks coffee at night",
                 "green tea and coffee", "plays chess", "tea tea tea", "reads about chess",
                 "morning run", "coffee beans from Kenya"]
        for i, text in enumerate(texts):
            namespace = ("user", "a") if i % 2 else ("user", "b")
            store.put(namespace, f"m{i}", {"text": text, "i": i})
        # Not embedded: never a query result, still readable.
        store.put(("user", "a"), "hidden", {"text": "tea tea tea tea"}, index=False)
        self.assertEqual(store.get(("user", "a"), "hidden").value["text"], "tea tea tea tea")
        # A path list overrides the store's fields for one item.
        store.put(("user", "b"), "by-title", {"title": "green tea", "text": "chess"},
                  index=["title"])

        vectors = {f"m{i}": embed([text])[0] for i, text in enumerate(texts)}
        vectors["by-title"] = embed(["green tea"])[0]
        for query in ["green tea", "coffee", "chess", "morning tea"]:
            q = embed([query])[0]
            for prefix in [(), ("user", "a")]:
                keys = [k for k in vectors
                        if prefix == () or (k != "by-title" and int(k[1:]) % 2 == 1)]
                expected = sorted(keys, key=lambda k: -cosine(q, vectors[k]))[:4]
                found = store.search(prefix, query=query, limit=4)
                self.assertEqual([item.key for item in found], expected, f"{query} {prefix}")
                for item in found:
                    self.assertAlmostEqual(item.score, cosine(q, vectors[item.key]), places=4)
                self.assertNotIn("hidden", [item.key for item in found])
        found = store.search((), query="tea", filter={"i": {"$gte": 4}}, limit=10)
        self.assertTrue(found)
        self.assertTrue(all(item.value["i"] >= 4 for item in found))
        # A filter that keeps two items, and one that keeps none, against exact.
        q = embed(["tea"])[0]
        few = store.search((), query="tea", filter={"i": {"$gte": 6}}, limit=10)
        self.assertEqual([item.key for item in few],
                         sorted(["m6", "m7"], key=lambda k: -cosine(q, vectors[k])))
        self.assertEqual(store.search((), query="tea", filter={"i": {"$gt": 99}}), [])
        self.assertEqual(len(store.search((), query="tea", limit=3, offset=2)), 3)

    def test_query_without_an_index_is_text_search(self):
        store = self.store("lg_text")
        store.put(("notes",), "a", {"text": "the quarterly budget review"})
        store.put(("notes",), "b", {"text": "lunch with the design team"})
        found = store.search(("notes",), query="budget")
        self.assertEqual([item.key for item in found], ["a"])
        self.assertGreater(found[0].score, 0)

    def test_list_namespaces_with_prefix_suffix_depth_and_paging(self):
        store = self.store("lg_list")
        for namespace in [("a", "b", "c"), ("a", "b", "d", "e"), ("a", "b", "d", "i"),
                          ("a", "b", "f"), ("a", "c", "f"), ("x", "y")]:
            store.put(namespace, "k", {"v": 1})
        self.assertEqual(store.list_namespaces(prefix=("a", "b"), max_depth=3),
                         [("a", "b", "c"), ("a", "b", "d"), ("a", "b", "f")])
        self.assertEqual(store.list_namespaces(suffix=("f",)), [("a", "b", "f"), ("a", "c", "f")])
        self.assertEqual(store.list_namespaces(prefix=("a", "*", "f")),
                         [("a", "b", "f"), ("a", "c", "f")])
        self.assertEqual(len(store.list_namespaces()), 6)
        self.assertEqual(store.list_namespaces(max_depth=1), [("a",), ("x",)])
        self.assertEqual(store.list_namespaces(limit=2, offset=1),
                         store.list_namespaces()[1:3])
        op = ListNamespacesOp(match_conditions=(MatchCondition("prefix", ("x",)),))
        self.assertEqual(store.batch([op]), [[("x", "y")]])

    def test_batch_results_follow_the_ops(self):
        store = self.store("lg_batch")
        results = store.batch([
            PutOp(("n",), "k1", {"v": 1}),
            GetOp(("n",), "k1"),
            SearchOp(("n",)),
            PutOp(("n",), "k1", None),
            GetOp(("n",), "k1"),
            ListNamespacesOp(),
        ])
        self.assertIsNone(results[0])
        self.assertEqual(results[1].value, {"v": 1})
        self.assertEqual([item.key for item in results[2]], ["k1"])
        self.assertIsNone(results[3])
        self.assertIsNone(results[4])
        self.assertEqual(results[5], [], "the namespace's only item is gone")

    def test_ttl_expires_items_and_reads_refresh_it(self):
        store = self.store("lg_ttl", ttl={"default_ttl": None, "refresh_on_read": True})
        memory = Memory(self.server.address, space="lg_ttl")
        self.addCleanup(memory.close)
        store.put(("t",), "short", {"v": 1}, ttl=0.005)  # 300 ms
        store.put(("t",), "forever", {"v": 2})
        self.assertIsNotNone(store.get(("t",), "short", refresh_ttl=False))
        time.sleep(0.6)
        self.assertIsNone(store.get(("t",), "short"))
        self.assertEqual([item.key for item in store.search(("t",))], ["forever"])
        self.assertEqual(memory.get(key="forever", agent="t").expires_at_us, 0)

        # Reads push the expiry forward once half the TTL has passed, and
        # not before (each push is a new version).
        store.put(("t",), "long", {"v": 3}, ttl=0.05)  # 3 s
        first = memory.get(key="long", agent="t").expires_at_us
        store.get(("t",), "long")
        self.assertEqual(memory.get(key="long", agent="t").expires_at_us, first, "too early")
        time.sleep(1.6)
        store.get(("t",), "long", refresh_ttl=False)
        self.assertEqual(memory.get(key="long", agent="t").expires_at_us, first)
        store.search(("t",))
        refreshed = memory.get(key="long", agent="t").expires_at_us
        self.assertGreater(refreshed, first)
        self.assertAlmostEqual(refreshed / 1e6, time.time() + 3, delta=0.5)
        self.assertEqual(len(memory.history(key="long", agent="t")), 2)

    def test_async_twins_give_the_same_answers(self):
        store = self.store("lg_async", index={"dims": DIMS, "embed": embed})

        async def run():
            await store.aput(("u", "1"), "a", {"text": "green tea"})
            await store.aput(("u", "2"), "b", {"text": "black coffee"})
            item = await store.aget(("u", "1"), "a")
            found = await store.asearch(("u",), query="tea", limit=1)
            namespaces = await store.alist_namespaces(prefix=("u",))
            await store.adelete(("u", "1"), "a")
            gone = await store.aget(("u", "1"), "a")
            return item, found, namespaces, gone

        item, found, namespaces, gone = asyncio.run(run())
        self.assertEqual(item.value, {"text": "green tea"})
        self.assertEqual([i.key for i in found], ["a"])
        self.assertTrue(math.isfinite(found[0].score))
        self.assertEqual(namespaces, [("u", "1"), ("u", "2")])
        self.assertIsNone(gone)
        self.assertIsNone(store.get(("u", "1"), "a"))

    def test_a_space_of_another_dimension_is_refused(self):
        self.store("lg_dims", index={"dims": DIMS, "embed": embed}).put(("n",), "k", {"v": 1})
        other = self.store("lg_dims", index={"dims": 8, "embed": embed})
        with self.assertRaisesRegex(ValueError, "16 dimensions"):
            other.get(("n",), "k")


if __name__ == "__main__":
    import unittest
    unittest.main()
