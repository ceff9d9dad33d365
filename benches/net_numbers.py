#!/usr/bin/env python3
"""Network numbers (issue 3), medians of --runs, with release binaries on 127.0.0.1:

  the disk's own durable write rate (pwrite + fdatasync, pre-zeroed file), measured first;
  TCP ingest at full speed (closed loop), and again over --sustained-events; the same messages into a private rsyslogd
  writing a plain file (the ratio of the two); TCP ack latency in an open loop at half the
  measured maximum, for two frame sizes, each against the maximum measured with that frame
  size (batches of 100 and of 1000 events), and for batches of 1000 once more with the
  connections sending in step (loadgen --aligned); HTTP NDJSON batches; inclusion proofs over HTTP
  on a log of --proof-leaves leaves.

Run from the repository root after
  cargo build --release -p auditlog-server --bin auditlogd -p auditlog-benches --bin loadgen
as: python3 benches/net_numbers.py [--events N] [--runs 3] [--latency-events 8000000]
    [--proof-leaves 10000000] [--sustained-events 32000000]
A JSON summary goes to --json (default target/net-numbers.json).
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from siem_numbers import T, Daemon, Rsyslog, free_port  # noqa: E402


def loadgen(*args):
    """Runs loadgen and returns its JSON summary."""
    fd, path = tempfile.mkstemp(suffix=".json"); os.close(fd)
    subprocess.run([f"{T}/loadgen", *map(str, args), "--json", path], check=True,
                   stdout=subprocess.DEVNULL)
    with open(path) as f:
        out = json.load(f)
    os.unlink(path)
    return out


def raw_disk(dir, block, total=256 << 20, seconds=3.0):
    """MB/s of pwrite + fdatasync of `block`-byte writes over a pre-zeroed, synced file."""
    path = os.path.join(dir, "raw.bin")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    zero = b"\0" * (1 << 20)
    for off in range(0, total, len(zero)):
        os.pwrite(fd, zero, off)
    os.fsync(fd)
    buf, off, t0 = b"x" * block, 0, time.perf_counter()
    while off + block <= total and time.perf_counter() - t0 < seconds:
        os.pwrite(fd, buf, off); os.fdatasync(fd); off += block
    rate = off / (time.perf_counter() - t0) / 1e6
    os.close(fd); os.unlink(path)
    return rate


def med(xs):
    return statistics.median(xs)


def slow_syncs(d, over="0.01"):
    """The daemon's group-commit syncs slower than `over` seconds so far (its sync latency
    histogram). A run's ack p99 is 1% of its acks; one sync that the disk holds for 40 ms or
    more holds about that many, so each latency run is reported with this count beside it."""
    total = below = 0
    for l in d.get("/metrics").decode().splitlines():
        if l.startswith("auditlog_sync_latency_seconds_bucket"):
            n = int(l.split()[1])
            if 'le="+Inf"' in l:
                total = n
            elif f'le="{over}"' in l:
                below = n
    return total - below


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=4_000_000)
    ap.add_argument("--runs", type=int, default=3)
    # Long enough that the daemon's first seconds (first segment, first checkpoints) are a
    # small part of each latency run.
    ap.add_argument("--latency-events", type=int, default=8_000_000)
    ap.add_argument("--proof-leaves", type=int, default=10_000_000)
    # The full-speed reading above ends with sealing a few segments behind; this one runs
    # long enough (~30 s) that sealing, the leaf index's merges and shipping keep up or
    # slow the producers, which is the rate a log can take for good. 0: skip.
    ap.add_argument("--sustained-events", type=int, default=32_000_000)
    ap.add_argument("--json", default=os.environ.get("CARGO_TARGET_DIR", "target") + "/net-numbers.json")
    a = ap.parse_args()
    n, runs = a.events, a.runs
    root = tempfile.mkdtemp(prefix="net-numbers-")
    summary = {"events": n, "runs": runs}

    summary["raw_mb_per_s"] = {str(b): raw_disk(root, b) for b in (64 << 10, 1 << 20)}
    print("disk, pwrite + fdatasync over a pre-zeroed file: " +
          ", ".join(f"{int(b) >> 10} KiB {r:,.0f} MB/s" for b, r in summary["raw_mb_per_s"].items()))

    def fresh(i):
        return Daemon(tempfile.mkdtemp(dir=root, prefix=f"d{i}-"))

    def retire(d):
        """Stops a run's daemon and deletes its data, so that the next run starts on a quiet
        machine: left in place, the page cache of earlier runs grew by gigabytes, and the
        kernel's reclaim of it ran beside later runs (seen in `perf sched` at 2 ms a turn)."""
        d.stop()
        shutil.rmtree(d.dir, ignore_errors=True)
        os.sync()
        time.sleep(2)

    # Full speed: a fresh log each run, 4 connections, batches of 1000, window 16.
    tcp = []
    for i in range(runs):
        d = fresh(i)
        tcp.append(loadgen("--protocol", "tcp", "--addr", f"127.0.0.1:{d.tcp}", "--token", d.tokens["writer"],
                           "--connections", 4, "--events", n, "--batch", 1000, "--window", 16))
        retire(d)
    rate = med([r["events_per_s"] for r in tcp])
    mb = med([r["mb_per_s"] for r in tcp])
    raw1m = summary["raw_mb_per_s"][str(1 << 20)]
    summary["tcp"] = {"events_per_s": rate, "mb_per_s": mb, "runs": [r["events_per_s"] for r in tcp]}
    print(f"TCP ingest, durable acks: {rate:,.0f} events/s, {mb:.0f} MB/s of payload "
          f"({mb / raw1m:.2f} of the disk's 1 MiB durable rate) (runs {[round(r['events_per_s']) for r in tcp]})")

    if a.sustained_events:
        sus = []
        for i in range(runs):
            d = fresh(20 + i)
            sus.append(loadgen("--protocol", "tcp", "--addr", f"127.0.0.1:{d.tcp}", "--token", d.tokens["writer"],
                               "--connections", 4, "--events", a.sustained_events, "--batch", 1000, "--window", 16))
            retire(d)
        srate = med([r["events_per_s"] for r in sus])
        summary["tcp_sustained"] = {"events": a.sustained_events, "events_per_s": srate,
                                    "runs": [r["events_per_s"] for r in sus]}
        print(f"TCP ingest, durable acks, sustained over {a.sustained_events:,} events: {srate:,.0f} events/s "
              f"({srate / rate:.2f} of the reading above) (runs {[round(r['events_per_s']) for r in sus]})")

    # rsyslog receiving the same messages over TCP into a plain file, unsynced.
    for conns in (1, 4):
        theirs = []
        for i in range(runs):
            port = free_port(); rd = f"{root}/rs-{conns}-{i}"; os.makedirs(rd)
            rs = Rsyslog(rd, port, f"{rd}/out.log")
            r = loadgen("--protocol", "syslog", "--addr", f"127.0.0.1:{port}", "--token", "-",
                        "--connections", conns, "--events", n, "--wait-file", f"{rd}/out.log")
            rs.stop(); shutil.rmtree(rd)
            theirs.append(r["events_per_s"])
        summary[f"rsyslog_x{conns}"] = {"events_per_s": med(theirs), "runs": theirs}
        print(f"rsyslog x{conns} to a plain file (unsynced): {med(theirs):,.0f} msg/s "
              f"(runs {[round(x) for x in theirs]}); auditlogd x4 durable / this = {rate / med(theirs):.2f}")

    # The maximum with batches of 100 (window 64): smaller frames cost more per event, so
    # half of this rate, not of the one above, is half the maximum of that workload.
    tcp100 = []
    for i in range(runs):
        d = fresh(50 + i)
        tcp100.append(loadgen("--protocol", "tcp", "--addr", f"127.0.0.1:{d.tcp}", "--token", d.tokens["writer"],
                              "--connections", 4, "--events", n, "--batch", 100, "--window", 64))
        retire(d)
    rate100 = med([r["events_per_s"] for r in tcp100])
    summary["tcp_batch100"] = {"events_per_s": rate100, "runs": [r["events_per_s"] for r in tcp100]}
    print(f"TCP ingest, batches of 100, window 64: {rate100:,.0f} events/s "
          f"(runs {[round(r['events_per_s']) for r in tcp100]})")

    # Half the maximum, open loop: the ack latency a steady producer sees, for each frame
    # size at half of the maximum measured with it. The connections take turns on one
    # schedule; the last reading has every connection send at the same moment instead
    # (loadgen --aligned: bursts of 4 frames of 256 KiB), the worst case for a frame's wait.
    for key, batch, window, top, extra in (("tcp_half_rate", 100, 64, rate100, ()),
                                           ("tcp_half_rate_batch1000", 1000, 16, rate, ()),
                                           ("tcp_half_rate_batch1000_aligned", 1000, 16, rate, ("--aligned",))):
        half = int(top / 2)
        lat = []
        for i in range(runs):
            d = fresh(100 + batch + i)
            lat.append(loadgen("--protocol", "tcp", "--addr", f"127.0.0.1:{d.tcp}", "--token", d.tokens["writer"],
                               "--connections", 4, "--events", a.latency_events, "--batch", batch,
                               "--window", window, "--rate", half, *extra))
            lat[-1]["syncs_over_10ms"] = slow_syncs(d)
            retire(d)
        p50 = med([r["latency_us"]["p50"] for r in lat]); p99 = med([r["latency_us"]["p99"] for r in lat])
        summary[key] = {"rate": half, "batch": batch, "aligned": bool(extra), "p50_us": p50, "p99_us": p99,
                        "runs": [{**r["latency_us"], "syncs_over_10ms": r["syncs_over_10ms"]} for r in lat]}
        each = ", ".join(f"{r['latency_us']['p99']} / {r['syncs_over_10ms']}" for r in lat)
        print(f"TCP open loop at {half:,} events/s (half), batches of {batch}{' (aligned)' if extra else ''}: ack p50 {p50 / 1000:.2f} ms, "
              f"p99 {p99 / 1000:.2f} ms (each run: p99 µs / syncs over 10 ms: {each})")

    # HTTP NDJSON, 1000 events per request.
    http = []
    for i in range(runs):
        d = fresh(200 + i)
        http.append(loadgen("--protocol", "http", "--addr", f"127.0.0.1:{d.http}", "--token", d.tokens["writer"],
                            "--connections", 4, "--events", n // 2, "--batch", 1000, "--window", 1))
        retire(d)
    summary["http"] = {"events_per_s": med([r["events_per_s"] for r in http]),
                       "runs": [r["events_per_s"] for r in http]}
    print(f"HTTP NDJSON x1000: {summary['http']['events_per_s']:,.0f} events/s "
          f"(runs {[round(r['events_per_s']) for r in http]})")

    # Inclusion proofs at --proof-leaves leaves.
    if a.proof_leaves:
        d = fresh(300)
        loadgen("--protocol", "tcp", "--addr", f"127.0.0.1:{d.tcp}", "--token", d.tokens["writer"],
                "--connections", 4, "--events", a.proof_leaves, "--batch", 1000, "--window", 16)
        d.get(f"/v1/checkpoint?min_size={a.proof_leaves}&wait_ms=30000")
        proofs = [loadgen("--protocol", "proofs", "--addr", f"127.0.0.1:{d.http}", "--token",
                          d.tokens["auditor"], "--connections", 16, "--requests", 200_000)
                  for _ in range(runs)]
        retire(d)
        summary["proofs"] = {"leaves": a.proof_leaves, "per_s": med([p["proofs_per_s"] for p in proofs]),
                             "p99_us": med([p["latency_us"]["p99"] for p in proofs]),
                             "runs": [p["proofs_per_s"] for p in proofs]}
        print(f"inclusion proofs over HTTP at {a.proof_leaves:,} leaves, 16 connections: "
              f"{summary['proofs']['per_s']:,.0f} proofs/s, p99 {summary['proofs']['p99_us'] / 1000:.2f} ms "
              f"(runs {[round(p['proofs_per_s']) for p in proofs]})")

    with open(a.json, "w") as f:
        json.dump(summary, f, indent=1)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
