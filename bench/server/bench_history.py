#!/usr/bin/env python3
"""What bounding the history costs a hot episode, through the service: one
episode updated --updates times (text only, as a LangGraph TTL refresh or a
Mem0 update does) through the Python client, against one engramd per
max_history_versions in --limits, in the same run; 0 (every version kept) is
the baseline each row's ratio is taken against.

For each limit: the mean latency of the first and of the last tenth of the
updates (a trim that walked the tombstones of earlier trims would show as a
last tenth slower than the first), the versions GetHistory returns, and the
data dir's size at the end. Prints a table on stderr and, with --json, one
JSON line per limit.

  /usr/bin/python3 bench/server/bench_history.py --updates 20000 --json

Starts its own engramd (--engramd, default build/bin/engramd) in a
temporary directory; --engramd lets the same run measure another build
(for instance the commit before a change).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "build", "python"))
from engram import Memory  # noqa: E402

sys.path.insert(0, HERE)
from bench_sharding import free_port  # noqa: E402


def dir_mib(path):
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except OSError:
                pass  # removed by a compaction meanwhile
    return total / 2**20


def run(engramd, work, limit, updates, dimension):
    config = os.path.join(work, f"limit{limit}.yaml")
    with open(config, "w") as f:
        f.write(f"max_history_versions: {limit}\ndisk_reserve_mb: 0\n")
    data = os.path.join(work, f"data{limit}")
    port = free_port()
    process = subprocess.Popen(
        [engramd, "--listen", f"127.0.0.1:{port}",
         "--data-dir", data, "--metrics-address", "off", "--log-level", "warn",
         "--config", config])
    try:
        with Memory(f"127.0.0.1:{port}", space="hot", agent="a") as memory:
            memory.wait_ready(60)
            memory.create_space(dimension=dimension, metric="cosine")
            vector = np.random.default_rng(1).normal(size=dimension).astype(np.float32)
            episode = memory.add("version 0", vector)
            latencies = np.empty(updates)
            for i in range(updates):
                begin = time.perf_counter()
                memory.update(episode, text=f"version {i + 1}")
                latencies[i] = (time.perf_counter() - begin) * 1e3
            versions = len(list(memory.history(episode)))
    finally:
        process.terminate()
        process.wait(60)
    tenth = max(1, updates // 10)
    return {"bench": "history", "max_history_versions": limit, "updates": updates,
            "first_tenth_mean_ms": float(latencies[:tenth].mean()),
            "last_tenth_mean_ms": float(latencies[-tenth:].mean()),
            "p99_ms": float(np.percentile(latencies, 99)),
            "versions_kept": versions, "data_dir_mib": dir_mib(data)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engramd", default=os.path.join(ROOT, "build", "bin", "engramd"))
    parser.add_argument("--limits", default="0,4")
    parser.add_argument("--updates", type=int, default=20000)
    parser.add_argument("--dimension", type=int, default=768)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    limits = [int(x) for x in args.limits.split(",")]
    work = tempfile.mkdtemp(prefix="engram-bench-history-")
    try:
        rows = [run(args.engramd, work, limit, args.updates, args.dimension)
                for limit in limits]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    baseline = next((r for r in rows if r["max_history_versions"] == 0), None)
    print(f"{'limit':>6} {'first 10% ms':>13} {'last 10% ms':>12} {'p99 ms':>8} "
          f"{'vs limit 0':>11} {'versions':>9} {'data dir MiB':>13}", file=sys.stderr)
    for row in rows:
        if baseline is not None:
            row["last_tenth_vs_unbounded"] = \
                row["last_tenth_mean_ms"] / baseline["last_tenth_mean_ms"]
        ratio = row.get("last_tenth_vs_unbounded")
        print(f"{row['max_history_versions']:>6} {row['first_tenth_mean_ms']:>13.3f} "
              f"{row['last_tenth_mean_ms']:>12.3f} {row['p99_ms']:>8.2f} "
              f"{'-' if ratio is None else f'{ratio:.2f}x':>11} {row['versions_kept']:>9} "
              f"{row['data_dir_mib']:>13.1f}", file=sys.stderr)
        if args.json:
            print(json.dumps(row))


if __name__ == "__main__":
    main()
