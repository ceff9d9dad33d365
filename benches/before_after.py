#!/usr/bin/env python3
"""Two builds side by side, interleaved run by run so the machine's drift falls on both:
in-process durable ingest (`ingest`), TCP ingest and HTTP NDJSON ingest over loopback
(`auditlogd` + `loadgen`). Prints medians and the ratio after/before of each.

Build each commit's release binaries into its own target directory, e.g.
  git worktree add /tmp/before <commit>
  (cd /tmp/before && CARGO_TARGET_DIR=/tmp/target-before cargo build --release \\
      -p auditlog-benches --bin ingest --bin loadgen -p auditlog-server --bin auditlogd)
  cargo build --release -p auditlog-benches --bin ingest --bin loadgen -p auditlog-server --bin auditlogd
then: python3 benches/before_after.py --before /tmp/target-before/release \\
          --after target/release [--runs 5] [--events 4000000]
loadgen is always the --after one, so only the daemon and the engine differ.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import siem_numbers  # noqa: E402


def ingest(bin_dir, events):
    """events/s of one in-process run (4 producers, 256 B events, io auto)."""
    fd, path = tempfile.mkstemp(suffix=".json"); os.close(fd)
    subprocess.run([f"{bin_dir}/ingest", "--runs", "1", "--no-raw", "--events", str(events),
                    "--json", path], check=True, stdout=subprocess.DEVNULL)
    with open(path) as f:
        out = json.load(f)
    os.unlink(path)
    return out["median"]["events_per_s"]


def over_network(bin_dir, loadgen_dir, root, protocol, events):
    """events/s of one loadgen run against a fresh daemon of `bin_dir`."""
    siem_numbers.T = bin_dir
    d = siem_numbers.Daemon(tempfile.mkdtemp(dir=root))
    try:
        fd, path = tempfile.mkstemp(suffix=".json"); os.close(fd)
        addr = f"127.0.0.1:{d.tcp if protocol == 'tcp' else d.http}"
        window = 16 if protocol == "tcp" else 1
        subprocess.run([f"{loadgen_dir}/loadgen", "--protocol", protocol, "--addr", addr,
                        "--token", d.tokens["writer"], "--connections", "4", "--events",
                        str(events), "--batch", "1000", "--window", str(window), "--json", path],
                       check=True, stdout=subprocess.DEVNULL)
        with open(path) as f:
            out = json.load(f)
        os.unlink(path)
        return out["events_per_s"]
    finally:
        d.stop()
        shutil.rmtree(d.dir, ignore_errors=True)
        os.sync()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--events", type=int, default=4_000_000)
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="before-after-", dir=os.environ.get("BENCH_DIR", "/var/tmp"))
    results = {k: {"before": [], "after": []} for k in ("ingest", "tcp", "http")}
    try:
        for i in range(a.runs):
            # Alternate which goes first, so neither always meets the warmer machine.
            order = ("before", "after") if i % 2 == 0 else ("after", "before")
            for which in order:
                b = a.before if which == "before" else a.after
                results["ingest"][which].append(ingest(b, a.events))
                results["tcp"][which].append(over_network(b, a.after, root, "tcp", a.events))
                results["http"][which].append(over_network(b, a.after, root, "http", a.events // 2))
            print(f"run {i + 1}: " + ", ".join(
                f"{k} {v['before'][-1]:,.0f} / {v['after'][-1]:,.0f}" for k, v in results.items()),
                flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for k, v in results.items():
        mb, ma = statistics.median(v["before"]), statistics.median(v["after"])
        print(f"{k:7} before {mb:>12,.0f} ev/s  after {ma:>12,.0f} ev/s  after/before {ma / mb:.3f}"
              f"  (runs before {[round(x) for x in v['before']]}, after {[round(x) for x in v['after']]})")


if __name__ == "__main__":
    main()
