#!/usr/bin/env python3
"""The disk's own sync stalls, with nothing of auditlog running: a loop of `pwrite` +
`fdatasync` of one block over a pre-zeroed 256 MiB file (what the sequencer does), at
about the pace of group commits at half load, reporting the latency distribution and how
many syncs took over 10 / 20 / 40 ms. Ack latency p99 figures should be read against it.

  python3 benches/disk_stalls.py [--seconds 15] [--block-kib 256] [--pause-ms 1.2] [--dir .]
"""
import argparse, os, tempfile, time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--block-kib", type=int, default=256)
    ap.add_argument("--pause-ms", type=float, default=1.2)
    ap.add_argument("--dir", default=".")
    a = ap.parse_args()
    size, block = 256 << 20, a.block_kib << 10
    fd, path = tempfile.mkstemp(dir=a.dir, prefix="disk-stalls-")
    try:
        zeros = b"\0" * (1 << 20)
        for _ in range(size >> 20):
            os.write(fd, zeros)
        os.fsync(fd)
        data, lat, i = os.urandom(block), [], 0
        end = time.monotonic() + a.seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            os.pwrite(fd, data, (i * block) % size)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
            i += 1
            time.sleep(a.pause_ms / 1e3)
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    n = len(lat)
    ms = lambda q: lat[min(n - 1, int(n * q))] * 1e3
    over = lambda s: sum(x > s for x in lat)
    print(f"{n} syncs of {a.block_kib} KiB: p50 {ms(0.5):.2f} p99 {ms(0.99):.2f} "
          f"p999 {ms(0.999):.2f} max {lat[-1] * 1e3:.1f} ms; over 10 ms {over(0.01)}, "
          f"20 ms {over(0.02)}, 40 ms {over(0.04)}")


if __name__ == "__main__":
    main()
