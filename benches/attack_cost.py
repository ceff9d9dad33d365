#!/usr/bin/env python3
"""What the combined attack costs the machine by itself, with no writer: for each kind of
attack connection (or all of them), a fresh daemon as `benches/attack.py` starts it, the
attacker (`auditlog_tests::attack`) runs for --seconds, and the CPU the daemon and the
attacker used over that time is printed in cores. On a machine whose cores the attacker
shares, this is what the writer loses before the daemon's defences cost anything.

Run from the repository root after the release build `benches/attack.py` names, as:
  python3 benches/attack_cost.py [--kinds all,idle_api,...] [--seconds 10]
"""
import argparse, os, shutil, subprocess, sys, tempfile, time, types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attack  # noqa: E402

KINDS = ("all,idle_api,idle_tcp,idle_syslog,idle_ops,stalled_tls_handshake,long_poll,"
         "export_never_read,body_fast_anonymous,body_fast_writer,body_slow_anonymous,body_slow_writer")


def cpu_s(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kinds", default=KINDS)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--flood-mib-per-s", type=int, default=200)
    a = ap.parse_args()
    attack.A = types.SimpleNamespace(flood_mib_per_s=a.flood_mib_per_s)
    for kind in a.kinds.split(","):
        root = tempfile.mkdtemp(prefix="attack-cost-")
        d = attack.Daemon(root)
        try:
            time.sleep(1)
            c0 = cpu_s(d.p.pid)
            only = [] if kind == "all" else ["--only", kind]
            p = subprocess.Popen([
                f"{attack.T}/attacker", "--api", f"127.0.0.1:{d.http}", "--tcp", f"127.0.0.1:{d.tcp}",
                "--syslog", f"127.0.0.1:{d.syslog}", "--ops", f"127.0.0.1:{d.ops}",
                "--auditor-token", d.tokens["auditor"], "--reader-tokens", ",".join(d.readers),
                "--writer-token", d.flood, "--seconds", str(a.seconds),
                "--flood-mib-per-s", str(a.flood_mib_per_s), "--export-hold-ms", "3600000",
                "--drain-ms", "0", *only], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t0 = time.perf_counter()
            _, _, ru = os.wait4(p.pid, 0)
            wall = time.perf_counter() - t0
            daemon = (cpu_s(d.p.pid) - c0) / wall
            attacker = (ru.ru_utime + ru.ru_stime) / wall
            print(f"{kind:24s} daemon {daemon:.2f} cores, attacker {attacker:.2f} cores "
                  f"(of {os.cpu_count()}) over {wall:.1f} s", flush=True)
        finally:
            d.stop()
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
