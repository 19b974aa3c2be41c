"""Contract test of engram.integrations.mem0 against a live engramd: Mem0's
vector-store interface (VectorStoreBase) and its Memory facade, with the
shapes Mem0 documents (OutputData with id, score and payload; results as
{"results": [...]} of dicts with id, memory, hash, metadata, score,
created_at, updated_at and the scope ids; the messages of update, delete
and delete_all; history entries), written down here since Mem0 is not
installed. Searches are checked against the exact answer computed here.

Run by ctest with ENGRAMD=<path to engramd> and PYTHONPATH=<build>/python.
"""

import uuid

import numpy as np

from engram.integrations.mem0 import EngramVectorStore, Memory, OutputData
from engramd_fixture import EngramdTestCase

DIMS = 8


def embed(texts):
    """Deterministic, far from unit length: letters counted into 8 bins."""
    out = []
    for text in texts:
        v = np.full(DIMS, 0.1)
        for ch in text.lower():
            if ch.isalpha():
                v[ord(ch) % DIMS] += 1
        out.append(list(v))
    return out


def cosine(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


class Mem0VectorStoreContractTest(EngramdTestCase):
    def test_the_vector_store_interface(self):
        store = EngramVectorStore(self.server.address, collection_name="m0_vs",
                                  embedding_model_dims=DIMS)
        self.addCleanup(store.close)
        rng = np.random.default_rng(2)
        vectors = (rng.normal(size=(30, DIMS)) * 5).tolist()
        ids = [str(uuid.uuid4()) for _ in vectors]
        payloads = [{"data": f"memory {i} about {'tea' if i % 3 == 0 else 'chess'}",
                     "user_id": f"u{i % 2}", "n": i, "tags": ["x", i]} for i in range(30)]
        store.insert(vectors, payloads, ids)
        self.assertIn("m0_vs", store.list_cols())
        self.assertEqual(store.col_info()["count"], 30)

        got = store.get(ids[4])
        self.assertIsInstance(got, OutputData)
        self.assertEqual((got.id, got.score, got.payload), (ids[4], None, payloads[4]))
        self.assertIsNone(store.get("no-such-id"))

        query = rng.normal(size=DIMS).tolist()
        for filters in [None, {"user_id": "u1"}, {"n": {"gte": 10}, "user_id": "u0"},
                        {"user_id": "nobody"}]:
            def keep(i, filters=filters):
                if not filters:
                    return True
                ok = filters.get("user_id") in (None, payloads[i]["user_id"])
                if "n" in filters:
                    ok = ok and payloads[i]["n"] >= 10
                return ok
            expected = sorted((i for i in range(30) if keep(i)),
                              key=lambda i: -cosine(query, vectors[i]))[:5]
            found = store.search("ignored", query, top_k=5, filters=filters)
            self.assertEqual([r.id for r in found], [ids[i] for i in expected], filters)
            for r in found:
                self.assertAlmostEqual(r.score, cosine(query, vectors[ids.index(r.id)]), places=4)
        self.assertEqual(len(store.search(None, query, limit=3)), 3)

        keyword = store.keyword_search("tea", top_k=50)
        self.assertEqual(sorted(r.id for r in keyword), sorted(ids[i] for i in range(0, 30, 3)))

        # update: the payload, the vector, or both.
        store.update(ids[0], payload={"data": "replaced", "user_id": "u9"})
        self.assertEqual(store.get(ids[0]).payload, {"data": "replaced", "user_id": "u9"})
        store.update(ids[0], vector=query)
        self.assertEqual(store.search(None, query, top_k=1)[0].id, ids[0])
        self.assertEqual(store.get(ids[0]).payload["data"], "replaced")

        listed = store.list(filters={"user_id": "u1"})
        self.assertIsInstance(listed, list)
        self.assertEqual(sorted(r.id for r in listed[0]),
                         sorted(ids[i] for i in range(30) if i % 2 == 1))
        self.assertEqual(len(store.list(top_k=4)[0]), 4)

        store.delete(ids[1])
        store.delete(ids[1])  # gone already: not an error
        self.assertIsNone(store.get(ids[1]))
        store.reset()
        self.assertEqual(store.col_info()["count"], 0)
        with self.assertRaises(ValueError):
            EngramVectorStore(self.server.address, collection_name="m0_vs",
                              embedding_model_dims=DIMS + 1)
        store.delete_col()
        self.assertNotIn("m0_vs", store.list_cols())


class Mem0MemoryContractTest(EngramdTestCase):
    def memory0(self, space):
        m = Memory(self.server.address, space=space, embed=embed, dims=DIMS)
        self.addCleanup(m.close)
        return m

    def test_add_search_get_all_and_scopes(self):
        m = self.memory0("m0_mem")
        added = m.add([{"role": "system", "content": "be nice"},
                       {"role": "user", "content": "I love green tea"},
                       {"role": "assistant", "content": "Noted: green tea"}],
                      user_id="alice", metadata={"topic": "food"})
        self.assertEqual([r["event"] for r in added["results"]], ["ADD", "ADD"])
        self.assertEqual(added["results"][0]["memory"], "I love green tea")
        m.add("I play chess on Sundays", user_id="alice", agent_id="coach")
        m.add("Bob likes coffee", user_id="bob")
        m.add("the coach prefers short answers", agent_id="coach")

        item = m.get(added["results"][0]["id"])
        self.assertEqual(item["memory"], "I love green tea")
        self.assertEqual(item["user_id"], "alice")
        self.assertEqual(item["role"], "user")
        self.assertEqual(item["metadata"], {"topic": "food"})
        self.assertEqual(len(item["hash"]), 32)
        self.assertIsNone(item["updated_at"])
        self.assertIsNone(m.get("999999999"))

        alice = m.get_all(filters={"user_id": "alice"})["results"]
        self.assertEqual(len(alice), 3)
        coach = m.get_all(agent_id="coach")["results"]  # the older keyword style
        self.assertEqual(sorted(r["memory"] for r in coach),
                         ["I play chess on Sundays", "the coach prefers short answers"])
        both = m.get_all(filters={"user_id": "alice", "agent_id": "coach"})["results"]
        self.assertEqual([r["memory"] for r in both], ["I play chess on Sundays"])
        self.assertEqual(len(m.get_all(user_id="alice", top_k=2)["results"]), 2)
        with self.assertRaises(ValueError):
            m.get_all()

        # Search ranks the scope's memories by cosine, like exact.
        texts = [r["memory"] for r in alice]
        q = embed(["tea please"])[0]
        expected = sorted(texts, key=lambda t: -cosine(q, embed([t])[0]))
        found = m.search("tea please", filters={"user_id": "alice"})["results"]
        self.assertEqual([r["memory"] for r in found], expected)
        for r in found:
            self.assertAlmostEqual(r["score"], cosine(q, embed([r["memory"]])[0]), places=4)
        self.assertTrue(all(r["user_id"] == "alice" for r in found))
        only_food = m.search("tea", user_id="alice", filters={"topic": "food"})["results"]
        self.assertEqual(len(only_food), 2)
        high = m.search("tea please", user_id="alice", threshold=0.99)["results"]
        self.assertTrue(all(r["score"] >= 0.99 for r in high))
        with self.assertRaises(ValueError):
            m.add("x", user_id="alice", infer=True)
        with self.assertRaises(ValueError):
            m.add("x")

    def test_update_history_delete_and_delete_all(self):
        m = self.memory0("m0_life")
        memory_id = m.add("likes tea", user_id="carol")["results"][0]["id"]
        self.assertEqual(m.update(memory_id, text="likes coffee"),
                         {"message": "Memory updated successfully!"})
        m.update(memory_id, metadata={"mood": "awake", "user_id": "mallory"})
        item = m.get(memory_id)
        self.assertEqual(item["memory"], "likes coffee")
        self.assertEqual(item["user_id"], "carol", "scope ids are fixed")
        self.assertEqual(item["metadata"], {"mood": "awake"})
        self.assertIsNotNone(item["updated_at"])
        found = m.search("coffee", user_id="carol")["results"]
        self.assertEqual(found[0]["id"], memory_id)
        self.assertAlmostEqual(found[0]["score"],
                               cosine(embed(["coffee"])[0], embed(["likes coffee"])[0]), places=4)

        history = m.history(memory_id)
        self.assertEqual([h["event"] for h in history], ["ADD", "UPDATE", "UPDATE"])
        self.assertEqual((history[1]["old_memory"], history[1]["new_memory"]),
                         ("likes tea", "likes coffee"))
        self.assertTrue(all(h["memory_id"] == memory_id for h in history))

        self.assertEqual(m.delete(memory_id), {"message": "Memory deleted successfully!"})
        self.assertIsNone(m.get(memory_id))
        with self.assertRaises(ValueError):
            m.delete(memory_id)
        with self.assertRaises(ValueError):
            m.update(memory_id, text="x")

        for i in range(7):
            m.add(f"note {i}", user_id="dave", run_id=f"r{i % 2}")
        m.add("keep me", user_id="erin")
        self.assertEqual(m.delete_all(user_id="dave", run_id="r0"),
                         {"message": "Memories deleted successfully!"})
        self.assertEqual(len(m.get_all(user_id="dave")["results"]), 3)
        m.delete_all(user_id="dave")
        self.assertEqual(m.get_all(user_id="dave")["results"], [])
        self.assertEqual(len(m.get_all(user_id="erin")["results"]), 1)
        with self.assertRaises(ValueError):
            m.delete_all()
        m.reset()
        self.assertEqual(m.get_all(user_id="erin")["results"], [])


if __name__ == "__main__":
    import unittest
    unittest.main()
