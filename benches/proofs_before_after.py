#!/usr/bin/env python3
"""Inclusion proofs over HTTP, two builds in the same run (issue 20 §1: the slimmer hash store
and leaf index must keep the HTTP proof rate within 10% of the build before).

Each build's auditlogd gets a fresh log of --leaves events over TCP (the after build's
loadgen), both daemons stay up, then proof runs alternate before/after --runs times, so the
machine's drift hits both alike. Also prints each data directory's hash store and leaf index
bytes per event.

  python3 benches/proofs_before_after.py --before /work/target-before/release \
      --after target/release [--leaves 10000000] [--runs 5]
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from siem_numbers import Daemon  # noqa: E402
from net_numbers import loadgen  # noqa: E402


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--leaves", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--requests", type=int, default=200_000)
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="proofs-ba-", dir=os.environ.get("BENCH_DIR", "target"))
    daemons = {}
    try:
        for name, bins in (("before", a.before), ("after", a.after)):
            os.makedirs(os.path.join(root, name))
            d = Daemon(os.path.join(root, name), bin_dir=bins)
            loadgen("--protocol", "tcp", "--addr", f"127.0.0.1:{d.tcp}", "--token", d.tokens["writer"],
                    "--connections", 4, "--events", a.leaves, "--batch", 1000, "--window", 16)
            d.get(f"/v1/checkpoint?min_size={a.leaves}&wait_ms=60000")
            daemons[name] = d
        for name, d in daemons.items():
            data = os.path.join(d.dir, "data")
            print(f"{name}: hash store {dir_bytes(os.path.join(data, 'hashes')) / a.leaves:.2f} B/event, "
                  f"leaf index {dir_bytes(os.path.join(data, 'leafindex')) / a.leaves:.2f} B/event")
        rates = {"before": [], "after": []}
        p99 = {"before": [], "after": []}
        for _ in range(a.runs):
            for name, d in daemons.items():
                r = loadgen("--protocol", "proofs", "--addr", f"127.0.0.1:{d.http}", "--token",
                            d.tokens["auditor"], "--connections", 16, "--requests", a.requests)
                rates[name].append(r["proofs_per_s"])
                p99[name].append(r["latency_us"]["p99"])
        for name in rates:
            print(f"{name}: {statistics.median(rates[name]):,.0f} proofs/s median "
                  f"(runs {[round(x) for x in rates[name]]}), p99 {statistics.median(p99[name]) / 1000:.2f} ms")
        ratio = statistics.median(rates["after"]) / statistics.median(rates["before"])
        pairs = [x / y for x, y in zip(rates["after"], rates["before"])]
        print(f"after / before: {ratio:.3f} (pairwise {[round(p, 3) for p in pairs]})")
    finally:
        for d in daemons.values():
            d.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
