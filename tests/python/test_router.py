"""The dual-process router through engramd.

Routes FAST, DELIBERATE and AUTO (the default) are checked against exact
search computed here with numpy, on inner-product vectors far from unit
length, with filters that keep everything, half, a few and nothing, in a
space whose bigger agent has a graph. Every AUTO answer must carry the gate's
decision with each signal and be either the fast answer or deliberation's.
Deliberation's context and time stages are checked on a small conversation;
bad route values are refused.

Run by ctest with ENGRAMD=<path to engramd> and PYTHONPATH=<build>/python.
"""

import json
import time

import grpc
import numpy as np

import engram

from engram.v1 import memory_pb2, memory_pb2_grpc
from engramd_fixture import EngramdTestCase

DIMENSION = 16


class RouterTest(EngramdTestCase):
    # deliberate_below 0: every AUTO search goes through the gate (these
    # spaces are small enough to be deliberated at once otherwise).
    engramd_config = ("index:\n  graph_threshold: 300\n  quantize_threshold: 64\n"
                      "router:\n  deliberate_below: 0\n")

    def test_routes_against_exact_with_every_filter(self):
        m = self.memory("router_vectors", agent="")
        m.create_space(dimension=DIMENSION, metric="ip")
        rng = np.random.default_rng(11)
        vectors = rng.standard_normal((700, DIMENSION)) * rng.uniform(0.05, 30, (700, 1))
        docs = []
        for i, vector in enumerate(vectors):
            doc = dict(embedding=vector.tolist(), agent="big" if i < 520 else "small",
                       session=f"s{i % 4}", metadata={"i": i})
            if i % 3:
                doc["kind"] = "fact"  # else the server's default, "message"
            docs.append(doc)
        ids = []
        for start in range(0, len(docs), 250):
            ids += m.add_many(docs[start:start + 250])
        # FAST and AUTO are compared answer for answer: the index must not
        # change (a graph build landing) between the two.
        with engram.Admin(self.server.address) as admin:
            deadline = time.time() + 60
            while int(admin.stats()["index_health"]["queued"]) > 0 and time.time() < deadline:
                time.sleep(0.05)
        filters = [
            ("all", {}, lambda i: True),
            ("half", dict(where=[("i", "<", 350)]), lambda i: i < 350),
            ("few", dict(agent="big", session="s1", kinds=["message"]),
             lambda i: i < 520 and i % 4 == 1 and i % 3 == 0),
            ("none", dict(kinds=["nothing"]), lambda i: False),
        ]
        escalations = 0
        for q in range(12):
            query = rng.standard_normal(DIMENSION) * rng.uniform(0.05, 30)
            scores = vectors @ query
            for name, arguments, keep in filters:
                context = f"query {q} filter {name}"
                kept = [i for i in range(len(docs)) if keep(i)]
                expected = sorted(kept, key=lambda i: (-scores[i], ids[i]))[:10]
                exact = m.search(query, k=10, exact=True, **arguments)
                self.assertEqual([h.episode.id for h in exact], [ids[i] for i in expected],
                                 context)
                deliberate = m.search(query, k=10, route="deliberate", **arguments)
                self.assertEqual(deliberate.route, "deliberate", context)
                self.assertEqual(deliberate.policy, "deliberate", context)
                self.assertIsNone(deliberate.gate, context)
                self.assertEqual([h.episode.id for h in deliberate], [ids[i] for i in expected],
                                 context)
                for hit, i in zip(deliberate, expected):
                    self.assertAlmostEqual(hit.score, scores[i], delta=1e-3 * max(1, abs(scores[i])))
                fast = m.search(query, k=10, route="fast", **arguments)
                self.assertIn(fast.route, ("index", "exact"), context)
                self.assertIsNone(fast.gate, context)
                auto = m.search(query, k=10, **arguments)
                self.assertEqual(auto.policy, "auto", context)
                self.assertIsNotNone(auto.gate, context)
                self.assertEqual(len(auto.gate.signals), 15, context)
                for signal in auto.gate.signals:
                    self.assertAlmostEqual(signal.contribution, signal.value * signal.weight,
                                           places=9)
                self.assertEqual(auto.gate.escalated, auto.route == "deliberate", context)
                if auto.gate.escalated:
                    self.assertGreaterEqual(auto.gate.score, auto.gate.threshold, context)
                elif auto.gate.score >= auto.gate.threshold:  # overruled: nothing to gain
                    self.assertIn("scored every vector exactly", auto.gate.reason, context)
                if auto.gate.escalated:
                    escalations += 1
                    self.assertEqual([h.episode.id for h in auto], [ids[i] for i in expected])
                else:
                    self.assertEqual([h.episode.id for h in auto], [h.episode.id for h in fast])
                self.assertEqual([s.name for s in auto.stages].count("gate"), 1, context)
                explained = json.loads(json.dumps(auto.explain()))
                self.assertEqual(explained["route"], auto.route)
                self.assertEqual(len(explained["hits"]), len(auto))
        print(f"AUTO escalated {escalations} of {12 * len(filters)} vector searches")

    def test_deliberation_reads_context_and_time(self):
        m = self.memory("router_dialogue", agent="ann")
        m.create_space(dimension=2, metric="l2")
        may, june = 1683676800_000000, 1686355200_000000  # 2023-05-10, 2023-06-10 UTC
        turns = [("s1", "shall we talk about the garden", may),
                 ("s2", "unrelated chatter from another session", june),
                 ("s1", "what colour did you paint the fence", may),
                 ("s2", "more unrelated chatter", june),
                 ("s1", "bright yellow, two coats", may),
                 ("s1", "lovely, the neighbours will notice", may),
                 ("s2", "I painted the fence in june too", june)]
        ids = m.add_many([dict(text=text, embedding=[float(i), 0.0], session=session,
                               event_time_us=time)
                          for i, (session, text, time) in enumerate(turns)])
        fast = m.search(text="paint fence", k=3, route="fast")
        self.assertEqual(fast.route, "lexical")
        self.assertNotIn(ids[4], [h.episode.id for h in fast])
        deliberate = m.search(text="paint fence", k=5, route="deliberate")
        by_id = {h.episode.id: h for h in deliberate}
        self.assertIn(ids[4], by_id)  # the answer, next to the turn that matched
        self.assertEqual([s.source for s in by_id[ids[4]].sources], ["context"])
        self.assertEqual([s.name for s in deliberate.stages], ["lexical", "context", "fuse"])
        for stage in deliberate.stages:  # each stage has its share of the deadline
            if stage.name != "fuse":
                self.assertGreater(stage.budget_micros, 0, stage.name)
        august = 1690848000_000000  # 2023-08-01
        timed = m.search(text="painted the fence in june", k=5, route="deliberate",
                         reference_time_us=august)
        self.assertEqual(timed[0].episode.id, ids[6])
        self.assertIn(ids[2], [h.episode.id for h in timed])  # demoted, not dropped
        time_stage = [s for s in timed.stages if s.name == "time"]
        self.assertEqual(time_stage[0].note, '"in june"')
        # Nothing in the window: the time stage leaves the ranking to the rest.
        self.assertEqual(len(m.search(text="painted the fence in june", k=5, route="deliberate",
                                      reference_time_us=may)), 5)

    def test_bad_routes_are_refused(self):
        m = self.memory("router_bad", agent="a")
        m.create_space(dimension=2)
        m.add("x", [1.0, 0.0])
        with self.assertRaises(ValueError):
            m.search([1.0, 0.0], route="slow")
        with grpc.insecure_channel(self.server.address) as channel:
            stub = memory_pb2_grpc.MemoryServiceStub(channel)
            with self.assertRaises(grpc.RpcError) as raised:
                stub.Search(memory_pb2.SearchRequest(space="router_bad", query=[1.0, 0.0], k=1,
                                                     route=7))
            self.assertEqual(raised.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("ROUTE_AUTO", raised.exception.details())
        self.assertEqual(m.search([1.0, 0.0], k=1, route="deliberate")[0].episode.text, "x")


class DefaultRouterTest(EngramdTestCase):
    def test_a_small_agent_is_deliberated_at_once(self):
        m = self.memory("router_small", agent="a")
        m.create_space(dimension=2, metric="l2")
        m.add_many([dict(text=f"turn {i}", embedding=[float(i), 1.0]) for i in range(30)])
        auto = m.search([3.2, 1.0], k=3)
        self.assertEqual(auto.route, "deliberate")
        self.assertTrue(auto.gate.escalated)
        self.assertEqual(auto.gate.signals, [])
        # (30, or fewer while the indexer is still adding them)
        self.assertRegex(auto.gate.reason, r"covers \d+ vectors?, fewer than 4096")
        self.assertEqual([h.episode.text for h in auto], ["turn 3", "turn 4", "turn 2"])
        self.assertEqual(m.search([3.2, 1.0], k=3, route="fast").route, "index")


if __name__ == "__main__":
    import unittest
    unittest.main(verbosity=2)
