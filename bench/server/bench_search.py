#!/usr/bin/env python3
"""Search through engramd from one Python caller (the `engram` package), on a
dataset of ../shared/data: loads --base into one agent, waits for the index,
then calls Memory.search(k=10) in a loop for --duration-s and reports
recall@10 against --gt, QPS, p50 and p99 (human line on stderr, one JSON line
on stdout with --json).

  /usr/bin/python3 bench/server/bench_search.py --address 127.0.0.1:50051 \\
      --base ../shared/data/labse_base.f16bin --query ../shared/data/labse_query.f16bin \\
      --gt ../shared/data/labse_query_gt100.ibin --json

Needs a running engramd (./run.sh) and build/python on the path (the build
generates the stubs there).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "build", "python"))
from engram import Memory  # noqa: E402
from engram.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402


def read_matrix(path):
    """Rows of an f16bin / fbin / ibin file (../shared/data/README.md)."""
    with open(path, "rb") as f:
        rows, cols = np.frombuffer(f.read(8), dtype=np.int32)
        dtype = np.float16 if path.endswith(".f16bin") else (
            np.int32 if path.endswith(".ibin") else np.float32)
        data = np.frombuffer(f.read(), dtype=dtype, count=int(rows) * int(cols))
    return data.reshape(int(rows), int(cols))


def settle(memory):
    """Waits until the index holds every write, then compacts the store so
    RocksDB's background work does not share the cores with the searches."""
    admin = admin_pb2_grpc.AdminServiceStub(memory._channel)
    while True:
        stats = admin.Stats(admin_pb2.StatsRequest())
        if stats.index_health.queued == 0:
            break
        time.sleep(0.2)
    for _ in admin.Compact(admin_pb2.CompactRequest()):
        pass
    return [p for p in stats.partitions if p.space == memory.space][0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--base", required=True)
    parser.add_argument("--query", required=True)
    parser.add_argument("--gt", required=True)
    parser.add_argument("--metric", default="cosine")
    parser.add_argument("--duration-s", type=float, default=10)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    base = read_matrix(args.base).astype(np.float32)
    queries = read_matrix(args.query).astype(np.float32)
    truth = read_matrix(args.gt)[:, :10]
    space = f"bench_py_{int(time.time() * 1e6)}"
    memory = Memory(args.address, space=space, agent="bench")
    memory.create_space(dimension=base.shape[1], metric=args.metric)
    try:
        ids = []
        start = time.time()
        for first in range(0, len(base), args.batch):
            rows = base[first:first + args.batch]
            ids.extend(memory.add_many([dict(text="", embedding=row.tolist()) for row in rows]))
        partition = settle(memory)
        load_s = time.time() - start
        row_of_id = {episode_id: row for row, episode_id in enumerate(ids)}
        query_lists = [q.tolist() for q in queries]

        latencies, recalls = [], []
        end = time.time() + args.duration_s
        q = 0
        while time.time() < end:
            i = q % len(queries)
            t0 = time.perf_counter()
            hits = memory.search(query_lists[i], k=10)
            latencies.append((time.perf_counter() - t0) * 1000)
            found = {row_of_id[hit.episode.id] for hit in hits}
            recalls.append(len(found & set(truth[i].tolist())) / 10)
            q += 1
        elapsed = args.duration_s
        result = {
            "bench": "search_python", "base": args.base, "rows": int(base.shape[0]),
            "dimension": int(base.shape[1]), "metric": args.metric, "concurrency": 1,
            "recall_at_10": float(np.mean(recalls)), "qps": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)), "calls": len(latencies),
            "load_s": load_s, "calibrated_beam_width": partition.beam_width,
            "first_stage": partition.first_stage,
        }
        print(f"python client, 1 caller: recall@10 {result['recall_at_10']:.4f}, "
              f"{result['qps']:.0f} QPS, p50 {result['p50_ms']:.3f} ms, "
              f"p99 {result['p99_ms']:.3f} ms (loaded in {load_s:.1f} s; {partition.first_stage} "
              f"codes, calibrated L {partition.beam_width})", file=sys.stderr)
        if args.json:
            print(json.dumps(result))
    finally:
        memory.delete_space()


if __name__ == "__main__":
    main()
