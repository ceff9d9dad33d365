#!/usr/bin/env python3
"""SIEM numbers (issue 6), medians of 3, with release binaries and private rsyslogd
instances on 127.0.0.1:

  export throughput per format, forwarding throughput to rsyslog, syslog ingest into
  auditlogd vs rsyslog writing the same messages to a plain file.

Run from the repository root after
  cargo build --release -p auditlog-server --bin auditlogd
  cargo build --release -p auditlog-benches --bin loadgen
as: python3 benches/siem_numbers.py [--events N] [--syslog-only]
(--syslog-only: just syslog ingest against rsyslog, 1 and 4 connections.)
"""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, tempfile, time, urllib.request

T = os.environ.get("CARGO_TARGET_DIR", "target") + "/release"


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def wait_port(port, limit=30):
    end = time.time() + limit
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Daemon:
    def __init__(self, dir, extra_siem="", bin_dir=None):
        self.dir = dir
        self.http, self.tcp, self.syslog, self.ops = free_port(), free_port(), free_port(), free_port()
        cfg = os.path.join(dir, "auditlogd.toml")
        open(cfg, "w").write("[engine]\nsegment_bytes = 268435456\n[siem]\n" + extra_siem)
        self.p = subprocess.Popen([f"{bin_dir or T}/auditlogd", "--config", cfg, "--data-dir", f"{dir}/data",
                                   "--http-addr", f"127.0.0.1:{self.http}", "--tcp-addr", f"127.0.0.1:{self.tcp}",
                                   "--syslog-addr", f"127.0.0.1:{self.syslog}", "--ops-addr", f"127.0.0.1:{self.ops}"],
                                  stdout=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
        wait_port(self.http)
        self.tokens = dict(l.split() for l in open(f"{dir}/data/initial-tokens"))

    def get(self, path, role="auditor"):
        r = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}",
                                   headers={"Authorization": "Bearer " + self.tokens[role]})
        return urllib.request.urlopen(r, timeout=600).read()

    def size(self):
        return json.loads(self.get("/v1/log"))["tree_size"]

    def metric(self, name):
        for l in self.get("/metrics").decode().splitlines():
            if l.startswith(name + " "):
                return int(l.split()[1])
        return None

    def stop(self):
        self.p.send_signal(signal.SIGTERM); self.p.wait(60)


class Rsyslog:
    def __init__(self, dir, port, outfile, template=None):
        os.makedirs(f"{dir}/work", exist_ok=True)
        tpl = f'template(name="t" type="string" string="{template}")\n' if template else ""
        use = ' template="t"' if template else ""
        open(f"{dir}/rsyslog.conf", "w").write(
            f'global(workDirectory="{dir}/work" maxMessageSize="64k")\nmodule(load="imtcp")\n{tpl}'
            f'input(type="imtcp" port="{port}" address="127.0.0.1" ruleset="r")\n'
            f'ruleset(name="r") {{ action(type="omfile" file="{outfile}"{use}) }}\n')
        self.p = subprocess.Popen(["rsyslogd", "-n", "-f", f"{dir}/rsyslog.conf", "-i", f"{dir}/pid"])
        wait_port(port)

    def stop(self):
        self.p.send_signal(signal.SIGTERM); self.p.wait(60)


def lines(path):
    try:
        with open(path, "rb") as f:
            return sum(c.count(b"\n") for c in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def cpu_s(pid):
    """User + system CPU seconds a process has used (/proc/PID/stat fields 14 and 15)."""
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def med(xs):
    return statistics.median(xs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--syslog-only", action="store_true")
    a = ap.parse_args()
    n = a.events
    root = tempfile.mkdtemp(prefix="siem-numbers-")
    try:
        if not a.syslog_only:
            export_and_forward(root, n)
        syslog_ingest(root, n)
    finally:
        # Gigabytes of segments per run: a disk shared with other builds fills up.
        shutil.rmtree(root, ignore_errors=True)


def export_and_forward(root, n):
    d = Daemon(root)
    # The log to export and forward: n events of 256 B over the binary TCP protocol.
    subprocess.run([f"{T}/loadgen", "--protocol", "tcp", "--addr", f"127.0.0.1:{d.tcp}", "--token",
                    d.tokens["writer"], "--connections", "4", "--events", str(n), "--batch", "1000"],
                   check=True, stdout=subprocess.DEVNULL)
    assert d.size() == n
    print(f"log: {n} events of 256 B")
    for fmt in ["cef", "json", "csv"]:
        rates, mbs = [], []
        for _ in range(3):
            t0 = time.time()
            out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", "-H",
                                  "Authorization: Bearer " + d.tokens["reader"],
                                  f"http://127.0.0.1:{d.http}/v1/export?format={fmt}"],
                                 check=True, capture_output=True, text=True).stdout
            dt = time.time() - t0
            rates.append(n / dt); mbs.append(int(out) / dt / 1e6)
        print(f"export {fmt}: {med(rates):,.0f} events/s, {med(mbs):.1f} MB/s "
              f"(runs {', '.join(f'{r:,.0f}' for r in rates)})")

    size = d.size()
    d.stop()

    # Forwarding: the whole log (size events) from cursor 0 to a rsyslog collector.
    fw = []
    for i in range(3):
        port = free_port(); rd = f"{root}/rs-fw-{i}"; os.makedirs(rd)
        rs = Rsyslog(rd, port, f"{rd}/cef.log", template="%msg%\\n")
        try:
            os.remove(f"{root}/data/forwarder.cursor")
        except FileNotFoundError:
            pass
        t0 = time.time()
        d = Daemon(root, f'forward_addr = "127.0.0.1:{port}"\n')
        while lines(f"{rd}/cef.log") < size:
            time.sleep(0.05)
        fw.append(size / (time.time() - t0))
        d.stop(); rs.stop()
    print(f"forwarding CEF to rsyslog: {med(fw):,.0f} events/s (runs {[round(x) for x in fw]}; "
          f"{size} events from cursor 0, daemon start included)")


def syslog_ingest(root, n):
    d = Daemon(root)

    # Syslog ingest: the same loadgen stream into auditlogd (durable) and rsyslog (file).
    for conns in [1, 4]:
        # Rates, and each daemon's CPU per message (its whole process, every thread: the
        # sealer and replicator included for auditlogd), which the shared cores do not move.
        ours, ours_cpu = [], []
        for _ in range(3):
            base = d.size()
            c0, t0 = cpu_s(d.p.pid), time.time()
            subprocess.run([f"{T}/loadgen", "--protocol", "syslog", "--addr", f"127.0.0.1:{d.syslog}",
                            "--token", "-", "--connections", str(conns), "--events", str(n)],
                           check=True, stdout=subprocess.DEVNULL)
            while d.size() < base + n:
                time.sleep(0.01)
            ours.append(n / (time.time() - t0))
            ours_cpu.append((cpu_s(d.p.pid) - c0) / n * 1e6)
        theirs, theirs_cpu = [], []
        for i in range(3):
            port = free_port(); rd = f"{root}/rs-in-{conns}-{i}"; os.makedirs(rd)
            rs = Rsyslog(rd, port, f"{rd}/out.log")
            c0 = cpu_s(rs.p.pid)
            out = subprocess.run([f"{T}/loadgen", "--protocol", "syslog", "--addr", f"127.0.0.1:{port}",
                                  "--token", "-", "--connections", str(conns), "--events", str(n),
                                  "--wait-file", f"{rd}/out.log"], check=True, capture_output=True, text=True).stdout
            theirs_cpu.append((cpu_s(rs.p.pid) - c0) / n * 1e6)
            rs.stop()
            theirs.append(float(out.split("events/s")[0].split(":")[-1].strip()))
        print(f"syslog ingest x{conns}: auditlogd (durable, stored once, hashed) {med(ours):,.0f} msg/s; "
              f"rsyslog to a plain file {med(theirs):,.0f} msg/s; ratio {med(ours) / med(theirs):.2f} "
              f"(runs {[round(x) for x in ours]} vs {[round(x) for x in theirs]}); "
              f"CPU per message: auditlogd {med(ours_cpu):.2f} us, rsyslogd {med(theirs_cpu):.2f} us "
              f"(runs {[round(x, 2) for x in ours_cpu]} vs {[round(x, 2) for x in theirs_cpu]})")

    d.stop()

if __name__ == "__main__":
    main()
