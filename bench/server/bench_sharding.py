#!/usr/bin/env python3
"""What sharding costs and buys through the service: N engramd shards on
loopback against one engramd holding the same episodes, in the same run,
through the Python clients (engram.sharding.ShardedMemory vs engram.Memory).

Loads --episodes LaBSE vectors (../shared/data) spread over --agents agents,
in batches that mix agents (so each sharded batch is split across shards),
then measures from --threads callers: put throughput; searches naming an
agent (routed to one shard); searches without one (fanned out to every shard
and merged). Checks that both deployments return the same ids for the exact
route. Prints a table on stderr and, with --json, one JSON line per row.

  /usr/bin/python3 bench/server/bench_sharding.py --shards 3 --json

Starts its own engramds (build/bin/engramd) in a temporary directory. On a
machine with fewer cores than shards the shards share them, which is what
the single engramd's row is measured against.
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "build", "python"))
from engram import Memory  # noqa: E402
from engram.sharding import ShardedMemory  # noqa: E402
from engram.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402

sys.path.insert(0, HERE)
from bench_search import read_matrix  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(work, name, args):
    port = free_port()
    data = os.path.join(work, name)
    process = subprocess.Popen(
        [os.path.join(ROOT, "build", "bin", "engramd"), "--listen", f"127.0.0.1:{port}",
         "--data-dir", data, "--metrics-address", "off", "--log-level", "warn", *args])
    address = f"127.0.0.1:{port}"
    memory = Memory(address)
    memory.wait_ready(60)
    memory.close()
    return process, address


def settle(addresses):
    """Waits until every engramd's index holds every write."""
    for address in addresses:
        with Memory(address) as memory:
            admin = admin_pb2_grpc.AdminServiceStub(memory._channel)
            while admin.Stats(admin_pb2.StatsRequest()).index_health.queued:
                time.sleep(0.2)


def timed(calls, threads):
    """Runs the callables from `threads` callers; (seconds, latencies in ms)."""
    latencies = []

    def run(call):
        begin = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - begin) * 1e3)

    begin = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, calls))
    return time.perf_counter() - begin, np.array(latencies)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data = os.path.join(ROOT, "..", "shared", "data")
    parser.add_argument("--base", default=os.path.join(data, "labse_base.f16bin"))
    parser.add_argument("--query", default=os.path.join(data, "labse_query.f16bin"))
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=20000)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--searches", type=int, default=400)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    base = read_matrix(args.base)[:args.episodes].astype(np.float32)
    queries = read_matrix(args.query).astype(np.float32)
    agents = [f"agent-{i}" for i in range(args.agents)]
    work = tempfile.mkdtemp(prefix="engram-bench-shards-")
    processes = []
    try:
        single_process, single_address = start(work, "single", [])
        processes.append(single_process)
        shard_addresses = []
        for i in range(args.shards):
            process, address = start(work, f"shard-{i}", ["--shard-index", str(i),
                                                          "--shard-count", str(args.shards)])
            processes.append(process)
            shard_addresses.append(address)
        single = Memory(single_address, space="bench", timeout=120)
        sharded = ShardedMemory(shard_addresses, space="bench", timeout=120)
        single.create_space(base.shape[1], metric="cosine")
        sharded.create_space(base.shape[1], metric="cosine")
        batches = [[dict(text=f"e{j}", embedding=base[j], agent=agents[j % len(agents)])
                    for j in range(start_row, min(start_row + args.batch, len(base)))]
                   for start_row in range(0, len(base), args.batch)]
        rows = []

        def row(measure, deployment, seconds, latencies, count, unit):
            rows.append({"bench": "sharding", "measure": measure, "deployment": deployment,
                         "shards": args.shards if deployment == "sharded" else 1,
                         "threads": args.threads, "count": count,
                         "per_s": round(count / seconds, 1), "unit": unit,
                         "p50_ms": round(float(np.percentile(latencies, 50)), 2),
                         "p99_ms": round(float(np.percentile(latencies, 99)), 2)})

        for name, client in (("single", single), ("sharded", sharded)):
            seconds, latencies = timed([lambda b=b: client.add_many(b) for b in batches],
                                       args.threads)
            row("put", name, seconds, latencies, len(base), "episodes")
        settle([single_address] + shard_addresses)
        rng = np.random.default_rng(1)
        picks = [(queries[i % len(queries)], agents[rng.integers(len(agents))])
                 for i in range(args.searches)]
        for agent_scope in ("one agent", "every agent"):
            for name, client in (("single", single), ("sharded", sharded)):
                calls = [lambda q=q, a=a: client.search(q, k=10, agent=a if agent_scope ==
                                                        "one agent" else "")
                         for q, a in picks]
                client.search(picks[0][0], k=10, agent="")  # warm
                seconds, latencies = timed(calls, args.threads)
                row(f"search, {agent_scope}", name, seconds, latencies, len(calls), "searches")
        # The same answers: exact searches, per agent and fanned out, by
        # their scores (equal vectors tie, and ties may order differently).
        mismatches = 0
        for q, a in picks[:50]:
            for agent in (a, ""):
                want = [round(h.score, 4) for h in single.search(q, k=10, agent=agent,
                                                                 exact=True)]
                got = [round(h.score, 4) for h in sharded.search(q, k=10, agent=agent,
                                                                exact=True)]
                mismatches += want != got
        single.close()
        sharded.close()
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)

    by = {(r["measure"], r["deployment"]): r for r in rows}
    print(f"{'measure':<22} {'single/s':>10} {'sharded/s':>10} {'ratio':>6} "
          f"{'p50 single':>11} {'p50 sharded':>12} {'p99 single':>11} {'p99 sharded':>12}",
          file=sys.stderr)
    for measure in dict.fromkeys(r["measure"] for r in rows):
        s, n = by[(measure, "single")], by[(measure, "sharded")]
        print(f"{measure:<22} {s['per_s']:>10} {n['per_s']:>10} "
              f"{n['per_s'] / s['per_s']:>6.2f} {s['p50_ms']:>11} {n['p50_ms']:>12} "
              f"{s['p99_ms']:>11} {n['p99_ms']:>12}", file=sys.stderr)
    print(f"exact searches with different answers: {mismatches} of 100", file=sys.stderr)
    if args.json:
        for r in rows:
            print(json.dumps(r))
        print(json.dumps({"bench": "sharding", "measure": "exact answers differ",
                          "count": mismatches, "of": 100}))
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
