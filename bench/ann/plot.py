#!/usr/bin/python3
"""Recall-QPS plots from bench_ann --json output, drawn with gnuplot.

Usage: bench/ann/plot.py RESULTS.jsonl [--threads 1] [--out PNG]
One line per system (its parameter sweep), Recall@10 on x, queries/s on a
log y axis, for one thread count.
"""
import argparse
import json
import subprocess
import sys
import tempfile


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="PNG path (default: results with .png)")
    args = parser.parse_args()

    series = {}
    title = ""
    with open(args.results) as f:
        for line in f:
            row = json.loads(line)
            if row.get("threads") != args.threads or "qps" not in row:
                continue
            title = f'{row["dataset"]}: {row["rows"]} x {row["dim"]}, {row["metric"]}'
            series.setdefault(row["system"], []).append((row["recall_at_10"], row["qps"]))
    if not series:
        sys.exit(f"no rows with threads={args.threads} in {args.results}")

    out = args.out or args.results.rsplit(".", 1)[0] + ".png"
    with tempfile.TemporaryDirectory() as tmp:
        plots = []
        for system, points in sorted(series.items()):
            path = f"{tmp}/{system}.dat"
            with open(path, "w") as data:
                for recall, qps in sorted(points):
                    data.write(f"{recall} {qps}\n")
            plots.append(f"'{path}' using 1:2 with linespoints title '{system}'")
        script = "\n".join([
            "set terminal pngcairo size 900,600",
            f"set output '{out}'",
            f"set title '{title}, {args.threads} thread(s), one query per call' noenhanced",
            "set xlabel 'Recall@10' noenhanced",
            "set ylabel 'queries per second'",
            "set logscale y",
            "set grid",
            "set key bottom left noenhanced",
            "plot " + ", ".join(plots),
        ])
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
    print(out)


if __name__ == "__main__":
    main()
