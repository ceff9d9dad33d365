#!/usr/bin/env python3
"""`auditlog verify` on every core against one core and against an older build, same run.

Verifies the footprint corpus (1,000,000 realistic audit events, 64 MiB segments: what
`footprint --keep` leaves, a data directory and its file:// bucket) with three binaries,
interleaved run by run with the order rotating, so the machine's drift falls on all:
  before   the older build's `auditlog verify` (one core)
  after-1  this build with --threads 1 (the sequential verifier)
  after    this build with its default (one thread per core)
Prints each one's median events/s (events: the signed size the verifier reports, over the
wall time of the whole command, start to exit), its median CPU time (user + system, all
threads), its peak RSS, and the ratios.

Build the older commit's client into its own target directory, e.g.
  git worktree add /tmp/before <commit>
  (cd /tmp/before && CARGO_TARGET_DIR=/tmp/target-before cargo build --release -p auditlog-client)
  cargo build --release -p auditlog-client -p auditlog-benches --bin footprint
then: python3 benches/verify_parallel.py --before /tmp/target-before/release \\
          --after target/release [--runs 9] [--corpus DIR]
Without --corpus the corpus is generated (`footprint --events 1000000 --segment-mib 64
--keep`) and removed at the end. The corpus is read from the page cache (a first,
untimed run of each binary warms it).

On a shared machine another process taking a core for part of a run halves the parallel
verifier's rate and not the sequential ones': a round (one run of each) in which other
processes used more than --others-max (default 5 %) of a core (the machine's busy time from
/proc/stat, less the verifier's own CPU) is set aside and run again, at most 3 x --runs
rounds in all; how many were set aside is printed.
"""
import argparse, os, re, shutil, statistics, subprocess, sys, time


def busy_seconds():
    """CPU time the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def verify(binary, target, history, extra):
    """(events, seconds, peak RSS KiB, CPU seconds, others' CPU seconds) of one
    `auditlog verify` run."""
    busy = busy_seconds()
    started = time.perf_counter()
    p = subprocess.Popen([binary, "verify", target, "--history", history] + extra,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = p.stdout.read().decode()
    p.stdout.close()
    _, _, usage = os.wait4(p.pid, 0)  # reaped here, for its own peak RSS
    seconds = time.perf_counter() - started
    p.returncode = 0
    m = re.search(r"^OK: signed size (\d+)", out, re.M)
    if not m:
        sys.exit(f"{binary} verify {target} did not verify:\n{out[:2000]}")
    # A file:// bucket has no retention lock: the verdict on the log is the OK line; the
    # retention report after it is not what is measured.
    cpu = usage.ru_utime + usage.ru_stime
    others = busy_seconds() - busy - cpu
    return int(m.group(1)), seconds, usage.ru_maxrss, cpu, others


def corpus(after, events):
    out = subprocess.run([f"{after}/footprint", "--events", str(events), "--segment-mib", "64",
                          "--keep"], check=True, capture_output=True, text=True).stdout
    m = re.search(r"^kept (.+)$", out, re.M)
    if not m:
        sys.exit(f"footprint kept nothing:\n{out}")
    return m.group(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="the older build's release directory")
    ap.add_argument("--after", required=True, help="this build's release directory")
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--corpus", help="a directory `footprint --keep` left (data/, bucket/)")
    ap.add_argument("--others-max", type=float, default=0.05,
                    help="set a round aside if other processes used more than this share "
                         "of a core during one of its runs")
    a = ap.parse_args()
    base = a.corpus or corpus(a.after, a.events)
    data, history = f"{base}/data", f"{base}/data/keys.json"
    bucket = f"file://{os.path.abspath(base)}/bucket"
    kinds = {
        "before": (f"{a.before}/auditlog", []),
        "after-1": (f"{a.after}/auditlog", ["--threads", "1"]),
        "after": (f"{a.after}/auditlog", []),
    }
    try:
        for where, target in (("directory", data), ("bucket", bucket)):
            rates = {k: [] for k in kinds}
            rss = {k: [] for k in kinds}
            cpu = {k: [] for k in kinds}
            for binary, extra in kinds.values():
                verify(binary, target, history, extra)  # warm the page cache
            kept, set_aside = 0, 0
            while kept < a.runs and kept + set_aside < 3 * a.runs:
                i = kept + set_aside
                names = list(kinds)
                names = names[i % 3:] + names[:i % 3]  # each goes first in turn
                got = {}
                for k in names:
                    binary, extra = kinds[k]
                    got[k] = verify(binary, target, history, extra)
                worst = max(o / s for _, s, _, _, o in got.values())
                if worst > a.others_max:
                    set_aside += 1
                    print(f"{where} round set aside: other processes used {worst:.0%} of a core",
                          flush=True)
                    continue
                kept += 1
                for k, (n, s, kib, cpu_s, _) in got.items():
                    rates[k].append(n / s)
                    rss[k].append(kib)
                    cpu[k].append(cpu_s)
                print(f"{where} run {kept}: " + ", ".join(
                    f"{k} {rates[k][-1]:,.0f}" for k in kinds), flush=True)
            if kept == 0:
                print(f"{where}: no round without other processes at work")
                continue
            med = {k: statistics.median(v) for k, v in rates.items()}
            print(f"{where}: {n:,} events, {os.cpu_count()} cores, median of {kept} rounds"
                  f" ({set_aside} set aside)")
            for k in kinds:
                print(f"  {k:8} {med[k]:>12,.0f} events/s  CPU {statistics.median(cpu[k]):.2f} s"
                      f"  peak RSS {max(rss[k]) / 1024:6.1f} MiB"
                      f"  (runs {[round(x) for x in rates[k]]})")
            print(f"  after / after-1 {med['after'] / med['after-1']:.2f}   "
                  f"after / before {med['after'] / med['before']:.2f}   "
                  f"after-1 / before {med['after-1'] / med['before']:.2f}", flush=True)
    finally:
        if not a.corpus:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
