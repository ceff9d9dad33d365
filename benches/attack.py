#!/usr/bin/env python3
"""A writer under attack: its throughput and ack p99 with the combined attack running, as a
ratio to the same run without it (goal: at least 0.8), medians of --runs.

Each run, for each condition, starts a fresh daemon (release build, the configuration's
defaults but for a syslog listener over TLS, which takes the stalled handshakes), puts
--prefill events of 600 B in the log (so an export outlasts the socket buffers of a client
that does not read), and measures a writer with loadgen: TCP ingest (closed loop, 4
connections, batches of --tcp-batch, window 16), then HTTP NDJSON (4 connections, batches of
--http-batch). Under attack, `attacker` (auditlog_tests::attack) starts a moment after each
loadgen has connected, from eight other loopback addresses, and runs until it is done:
2,000 idle sockets on each listener (API, TCP ingest, syslog, ops), 600 long-polls by one
auditor, 600 exports that never read (by 8 readers), 256 stalled TLS handshakes and 4 MiB
bodies, 8 connections each of fast and slow, with and without a writer token (the fast ones
--flood-mib-per-s in all), every connection reopened a second after it is closed. A prober
asks /health on the ops listener on a new connection ten times a second throughout; its
failures are reported.

The writer connects before the attack starts. One that connects while the listeners are full
of the attack's sockets gets in by closing one of theirs, its source holding less than its
fair share (`serve::IdleConns`); that path is exercised by the test's probes, not measured here.

Run from the repository root after
  cargo build --release -p auditlog-server --bin auditlogd -p auditlog-benches --bin loadgen \\
      -p auditlog-tests --bin attacker
as: python3 benches/attack.py [--runs 3] [--tcp-events 12000000] [--http-events 4000000]
A JSON summary goes to --json (default target/attack.json).
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from siem_numbers import T, free_port, wait_port  # noqa: E402


def tokens_add(data, role, name):
    out = subprocess.run([f"{T}/auditlogd", "--data-dir", data, "tokens", "add", "--role", role,
                          "--name", name], check=True, capture_output=True, text=True)
    return out.stdout.strip()


class Daemon:
    def __init__(self, dir):
        self.dir = dir
        self.http, self.tcp, self.syslog, self.ops = (free_port() for _ in range(4))
        data = f"{dir}/data"
        self.flood = tokens_add(data, "writer", "flood")
        self.readers = [tokens_add(data, "reader", f"scraper-{i}") for i in range(8)]
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", f"{dir}/key.pem", "-out", f"{dir}/cert.pem", "-days", "2",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True)
        cfg = os.path.join(dir, "auditlogd.toml")
        open(cfg, "w").write(
            "[engine]\nsegment_bytes = 268435456\n[siem]\n"
            f'syslog_addr = "127.0.0.1:{self.syslog}"\nsyslog_tls = true\n'
            f'syslog_tls_cert_path = "{dir}/cert.pem"\nsyslog_tls_key_path = "{dir}/key.pem"\n')
        self.p = subprocess.Popen([f"{T}/auditlogd", "--config", cfg, "--data-dir", data,
                                   "--http-addr", f"127.0.0.1:{self.http}", "--tcp-addr", f"127.0.0.1:{self.tcp}",
                                   "--ops-addr", f"127.0.0.1:{self.ops}"],
                                  stdout=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "error"})
        wait_port(self.http)
        self.tokens = dict(l.split() for l in open(f"{data}/initial-tokens"))

    def rss_hwm_kib(self):
        for l in open(f"/proc/{self.p.pid}/status"):
            if l.startswith("VmHWM:"):
                return int(l.split()[1])
        return 0

    def stop(self):
        self.p.terminate(); self.p.wait(120)


class Attack:
    """The attacker process, until stop(); then its summary."""

    def __init__(self, d, root):
        self.t0 = time.perf_counter()
        self.stop_file = tempfile.mktemp(dir=root)
        self.json = tempfile.mktemp(dir=root, suffix=".json")
        self.p = subprocess.Popen([
            f"{T}/attacker", "--api", f"127.0.0.1:{d.http}", "--tcp", f"127.0.0.1:{d.tcp}",
            "--syslog", f"127.0.0.1:{d.syslog}", "--ops", f"127.0.0.1:{d.ops}",
            "--auditor-token", d.tokens["auditor"], "--reader-tokens", ",".join(d.readers),
            "--writer-token", d.flood, "--seconds", "3600", "--stop-file", self.stop_file,
            "--flood-mib-per-s", str(A.flood_mib_per_s), "--json", self.json,
            # Exports never read for the whole run; at the end everything is closed at once.
            "--export-hold-ms", "3600000", "--drain-ms", "0"])

    def stop(self):
        """Ends the attack; its summary, with the CPU the attacker used (it shares the
        machine's cores with the daemon and the writer)."""
        open(self.stop_file, "w").close()
        _, status, ru = os.wait4(self.p.pid, 0)
        self.p.returncode = os.waitstatus_to_exitcode(status)
        with open(self.json) as f:
            r = json.load(f)
        r["cpu_s"] = ru.ru_utime + ru.ru_stime
        r["wall_s"] = time.perf_counter() - self.t0
        return r


class Prober(threading.Thread):
    """GET /health on the ops listener, a new connection each time, 10 a second, 1 s each."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.halt = port, threading.Event()
        self.ok = self.failed = 0
        self.max_s = 0.0

    def run(self):
        while not self.halt.is_set():
            t0 = time.perf_counter()
            try:
                s = socket.create_connection(("127.0.0.1", self.port), 1.0)
                s.settimeout(max(0.01, 1.0 - (time.perf_counter() - t0)))
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    b = s.recv(4096)
                    if not b:
                        break
                    data += b
                s.close()
                good = data.startswith(b"HTTP/1.1 200")
            except OSError:
                good = False
            took = time.perf_counter() - t0
            self.max_s = max(self.max_s, took)
            if good and took <= 1.0:
                self.ok += 1
            else:
                self.failed += 1
            time.sleep(max(0.0, 0.1 - took))


def loadgen(d, protocol, events, batch, attacked, root):
    """One loadgen run, the attack (if any) started once its connections are up."""
    out = tempfile.mktemp(dir=root, suffix=".json")
    addr = d.tcp if protocol == "tcp" else d.http
    args = [f"{T}/loadgen", "--protocol", protocol, "--addr", f"127.0.0.1:{addr}", "--token", d.tokens["writer"],
            "--connections", "4", "--events", str(events), "--batch", str(batch), "--window", "16",
            "--event-bytes", "256", "--warmup-ms", "1000", "--json", out]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    attack = None
    if attacked:
        # Its connections are made in the first milliseconds; then the attack.
        time.sleep(0.3)
        attack = Attack(d, root)
    p.wait()
    report = attack.stop() if attack else None
    if p.returncode != 0:
        raise RuntimeError(f"loadgen {protocol} failed ({p.returncode})")
    with open(out) as f:
        r = json.load(f)
    return r, report


def one(root, i, attacked):
    d = Daemon(tempfile.mkdtemp(dir=root, prefix=f"{'a' if attacked else 'q'}{i}-"))
    subprocess.run([f"{T}/loadgen", "--protocol", "tcp", "--addr", f"127.0.0.1:{d.tcp}", "--token",
                    d.tokens["writer"], "--connections", "1", "--events", str(A.prefill), "--batch", "1000",
                    "--event-bytes", "600"], check=True, stdout=subprocess.DEVNULL)
    prober = Prober(d.ops); prober.start()
    tcp, tcp_attack = loadgen(d, "tcp", A.tcp_events, A.tcp_batch, attacked, root)
    http, http_attack = loadgen(d, "http", A.http_events, A.http_batch, attacked, root)
    prober.halt.set(); prober.join()
    hwm = d.rss_hwm_kib()
    d.stop()
    shutil.rmtree(d.dir, ignore_errors=True)
    os.sync(); time.sleep(1)
    return {"tcp": tcp, "http": http, "probes_ok": prober.ok, "probes_failed": prober.failed,
            "probe_max_s": prober.max_s, "vm_hwm_kib": hwm,
            "attack": {"tcp": tcp_attack, "http": http_attack} if attacked else None}


def main():
    global A
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tcp-events", type=int, default=12_000_000)
    ap.add_argument("--tcp-batch", type=int, default=1000)
    ap.add_argument("--http-events", type=int, default=4_000_000)
    ap.add_argument("--http-batch", type=int, default=1000)
    ap.add_argument("--prefill", type=int, default=20_000)
    ap.add_argument("--flood-mib-per-s", type=int, default=200)
    ap.add_argument("--json", default=os.environ.get("CARGO_TARGET_DIR", "target") + "/attack.json")
    A = ap.parse_args()
    for b in ("auditlogd", "loadgen", "attacker"):
        if not os.path.exists(f"{T}/{b}"):
            sys.exit(f"{T}/{b} missing: build the release binaries first (see the top of this file)")
    root = tempfile.mkdtemp(prefix="attack-bench-")
    quiet, attacked = [], []
    for i in range(A.runs):
        # Alternated, so a drift of the machine over the runs falls on both.
        quiet.append(one(root, i, False))
        attacked.append(one(root, i, True))
        q, a = quiet[-1], attacked[-1]
        print(f"run {i}: tcp {q['tcp']['events_per_s']:,.0f} -> {a['tcp']['events_per_s']:,.0f} ev/s, "
              f"p99 {q['tcp']['latency_us']['p99']} -> {a['tcp']['latency_us']['p99']} us; "
              f"http {q['http']['events_per_s']:,.0f} -> {a['http']['events_per_s']:,.0f} ev/s, "
              f"p99 {q['http']['latency_us']['p99']} -> {a['http']['latency_us']['p99']} us; "
              f"probes failed {q['probes_failed']} / {a['probes_failed']}", flush=True)
    med = statistics.median
    summary = {"runs": A.runs, "tcp_events": A.tcp_events, "http_events": A.http_events,
               "flood_mib_per_s": A.flood_mib_per_s, "quiet": quiet, "attacked": attacked}
    for proto in ("tcp", "http"):
        qe = med(r[proto]["events_per_s"] for r in quiet)
        ae = med(r[proto]["events_per_s"] for r in attacked)
        qp = med(r[proto]["latency_us"]["p99"] for r in quiet)
        ap_ = med(r[proto]["latency_us"]["p99"] for r in attacked)
        summary[proto] = {"events_per_s": [qe, ae], "p99_us": [qp, ap_],
                          "throughput_ratio": ae / qe, "p99_ratio": qp / ap_ if ap_ else None}
        print(f"{proto.upper()} writer: {qe:,.0f} ev/s without the attack, {ae:,.0f} under it "
              f"(ratio {ae / qe:.2f}); ack p99 {qp / 1000:.1f} ms -> {ap_ / 1000:.1f} ms "
              f"(without / under {qp / ap_:.2f})")
    cores = [r["attack"][p]["cpu_s"] / r["attack"][p]["wall_s"] for r in attacked for p in ("tcp", "http")]
    summary["attacker_cores"] = med(cores)
    print(f"the attacker itself used {med(cores):.2f} of the machine's cores (median over the attacked runs)")
    fails = sum(r["probes_failed"] for r in attacked)
    probes = fails + sum(r["probes_ok"] for r in attacked)
    print(f"ops /health probes on new connections under attack: {fails} of {probes} failed; "
          f"daemon VmHWM median {med(r['vm_hwm_kib'] for r in quiet) / 1024:.0f} MiB quiet, "
          f"{med(r['vm_hwm_kib'] for r in attacked) / 1024:.0f} MiB attacked")
    with open(A.json, "w") as f:
        json.dump(summary, f, indent=1)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
