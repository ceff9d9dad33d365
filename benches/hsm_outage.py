#!/usr/bin/env python3
"""Ingest through an HSM outage, medians of --runs, with release binaries on 127.0.0.1.

Each run: a fresh log signed by an Ed25519 key in a SoftHSM2 token, a seal queue of one
segment (the smallest), 64 MiB segments; TCP ingest at full speed (loadgen, 4 connections,
batches of 1000) for --events with the token present, again with the token directory moved
away (the HSM gone: every signing fails), and again with it back. Reported: events/s of
each phase, the outage phase as a ratio to the one before it in the same run, segments
sealed during the outage, and whether checkpoints resumed after it.

Run from the repository root after
  cargo build --release -p auditlog-server --bin auditlogd -p auditlog-benches --bin loadgen
as: python3 benches/hsm_outage.py [--events 4000000] [--runs 3]
"""
import argparse, json, os, shutil, signal, statistics, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from siem_numbers import T, free_port, wait_port  # noqa: E402
from net_numbers import loadgen  # noqa: E402

PIN = "1234"
MODULES = ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"]


class HsmDaemon:
    def __init__(self, dir):
        self.dir = dir
        module = next(m for m in MODULES if os.path.exists(m))
        self.tokens_dir = f"{dir}/tokens"
        os.makedirs(self.tokens_dir)
        conf = f"{dir}/softhsm2.conf"
        open(conf, "w").write(f"directories.tokendir = {self.tokens_dir}\nobjectstore.backend = file\n"
                              "log.level = ERROR\nslots.removable = false\n")
        self.env = {**os.environ, "SOFTHSM2_CONF": conf, "BENCH_HSM_PIN": PIN, "RUST_LOG": "error"}
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench",
                        "--so-pin", "5678", "--pin", PIN], env=self.env, check=True, stdout=subprocess.DEVNULL)
        cfg = f"{dir}/auditlogd.toml"
        open(cfg, "w").write("[engine]\nsegment_bytes = 67108864\nseal_queue_segments_max = 1\n")
        subprocess.run([f"{T}/auditlogd", "--config", cfg, "--data-dir", f"{dir}/data", "keys", "generate",
                        "--pkcs11", "--module", module, "--token-label", "bench", "--key-label", "cp",
                        "--pin-env", "BENCH_HSM_PIN"], env=self.env, check=True, stdout=subprocess.DEVNULL)
        open(cfg, "a").write(f'[signer]\nbackend = "pkcs11"\npkcs11_module = "{module}"\ntoken_label = "bench"\n'
                             'key_label = "cp"\npin_env = "BENCH_HSM_PIN"\n')
        self.http, self.tcp, self.ops = free_port(), free_port(), free_port()
        self.p = subprocess.Popen([f"{T}/auditlogd", "--config", cfg, "--data-dir", f"{dir}/data",
                                   "--http-addr", f"127.0.0.1:{self.http}", "--tcp-addr", f"127.0.0.1:{self.tcp}",
                                   "--ops-addr", f"127.0.0.1:{self.ops}"],
                                  stdout=subprocess.DEVNULL, env=self.env)
        wait_port(self.http)
        self.tokens = dict(l.split() for l in open(f"{dir}/data/initial-tokens"))

    def get(self, path):
        r = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}",
                                   headers={"Authorization": "Bearer " + self.tokens["auditor"]})
        try:
            with urllib.request.urlopen(r, timeout=120) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def metric(self, name):
        for l in self.get("/metrics")[1].decode().splitlines():
            if l.startswith(name + " "):
                return int(float(l.split()[1]))
        return None

    def ingest(self, events):
        return loadgen("--protocol", "tcp", "--addr", f"127.0.0.1:{self.tcp}", "--token", self.tokens["writer"],
                       "--connections", 4, "--events", events, "--batch", 1000, "--window", 16)

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        return self.p.wait(120)


def run(root, i, events):
    d = HsmDaemon(tempfile.mkdtemp(dir=root, prefix=f"r{i}-"))
    try:
        before = d.ingest(events)["events_per_s"]
        away = f"{d.dir}/tokens-away"
        os.rename(d.tokens_dir, away)
        sealed0, cp0 = d.metric("auditlog_sealed_segments"), d.metric("auditlog_checkpoint_size")
        during = d.ingest(events)["events_per_s"]
        ready, _ = d.get("/ready")
        sealed = d.metric("auditlog_sealed_segments") - sealed0
        cp_during = d.metric("auditlog_checkpoint_size")
        os.rename(away, d.tokens_dir)
        after = d.ingest(events)["events_per_s"]
        size = json.loads(d.get("/v1/log")[1])["tree_size"]
        status, _ = d.get(f"/v1/checkpoint?min_size={size}&wait_ms=30000")
        return {"before": before, "during": during, "after": after, "sealed_during": sealed,
                "ready_during": ready, "signed_during": cp_during > cp0,
                "checkpoint_after": status == 200, "exit": d.stop()}
    finally:
        if d.p.poll() is None:
            d.p.kill()
        shutil.rmtree(d.dir, ignore_errors=True)
        os.sync()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=4_000_000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="hsm-outage-")
    runs = [run(root, i, a.events) for i in range(a.runs)]
    shutil.rmtree(root, ignore_errors=True)
    for r in runs:
        print(json.dumps(r))
    med = lambda k: statistics.median(r[k] for r in runs)
    ratio = statistics.median(r["during"] / r["before"] for r in runs)
    print(f"TCP ingest, {a.events:,} events a phase, medians of {a.runs}: with the HSM {med('before'):,.0f} events/s; "
          f"HSM gone {med('during'):,.0f} events/s ({ratio:.2f} of the phase before, same run), "
          f"{med('sealed_during'):.0f} segments sealed meanwhile; back {med('after'):,.0f} events/s; "
          f"checkpoints resumed in {sum(r['checkpoint_after'] for r in runs)} of {a.runs} runs")


if __name__ == "__main__":
    main()
