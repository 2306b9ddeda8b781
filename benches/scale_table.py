#!/usr/bin/env python3
"""A vault at scale, one row per journal size: open, time to the first byte of the newest and
the oldest point, NBD random 4 KiB reads, the failover's read pass, prune, and peak memory.

  benches/scale_table.py WORKDIR [--records 1000000,10000000] [--reads 2000] [--keep] [--out FILE]

Each vault is `replog bench write --pattern rand --block 64` over a sparse disk of 10 TiB
apparent size, a point every 1/1000 of the writes, 64 MiB segments: every record is its own
extent (the worst case for an extent map), and the scratch space stays small (64 bytes a
record plus its header). A vault built by an earlier run with the same record count is reused
with --keep (building one at 10^7 takes minutes); prune changes it, so without --keep it is
built again and removed at the end.

Per row, each command alone, peak RSS from /usr/bin/time (or the server's VmHWM):
- `replog checkpoint` (a checkpoint index at the newest sealed segment end), time and memory;
- `replog bench resolve`: open, and the time to resolve the newest and the oldest point (the
  time to the first byte of a failover or an export);
- `replog serve-nbd --latest` on a Unix socket and N random 4 KiB reads through python3-libnbd,
  one at a time: p50 and p99 of each read, and the server's peak RSS;
- `replog bench read --latest` where the binary has it (every byte of the newest point read
  through the view, in disk order, discarded): the failover's read pass without 40 GB of output;
- `replog prune --keep-last N`, N = all the points but one: retention dropping the oldest
  point, as it does day by day; the base rolls forward over 1/1000 of the records, and the
  garbage pass decides every record after it. (`--keep-last 2` would fold every record into
  the base: at 10^8 scattered 64-byte records that is 10^8 separate blocks of base, hundreds of
  GB.)
"""
import json, os, signal, subprocess, sys, time

from benchkit import MiB, REPLOG, arg, begin, remove, run, table, wait_for, write_out

DISK = 10 << 40
RECORD = 64


def timed_rss(cmd):
    """Runs cmd under /usr/bin/time; returns (wall seconds, peak RSS bytes, stdout)."""
    t = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True)
    wall = time.monotonic() - t
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{p.stderr.strip()}")
    return wall, int(p.stderr.strip().splitlines()[-1]) * 1024, p.stdout


def vmhwm(pid):
    """Peak resident bytes of a running process."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))


def percentile(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def build(work, records):
    """The vault of `records` random 64-byte writes; reused when --keep and already built."""
    v = os.path.join(work, f"scale-{records}")
    stamp = os.path.join(work, f"scale-{records}.built")
    if "--keep" in sys.argv and os.path.exists(stamp):
        return v, json.load(open(stamp))
    remove(v)
    run([REPLOG, "init", v, "--segment-size", "64MiB"])
    total = RECORD * records
    wall, rss, out = timed_rss([REPLOG, "bench", "write", v, "--pattern", "rand", "--block", str(RECORD),
                                "--total", str(total), "--point-every", str(total // 1000),
                                "--disk-size", str(DISK), "--json"])
    built = {"seconds": wall, "peak_rss_bytes": rss, "journal_bytes": du(v)}
    json.dump(built, open(stamp, "w"))
    return v, built


def du(path):
    return int(run(["du", "-s", "--block-size=1", path]).split()[0])


# Debian's python3-libnbd is a module of the system's python3, which may not be the one running
# this script: the reads run there.
READS = """
import json, random, sys, time, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
size, rng, lat = h.get_size(), random.Random(7), []
for _ in range(int(sys.argv[2])):
    off = rng.randrange(size // 4096) * 4096
    t = time.perf_counter_ns()
    h.pread(4096, off)
    lat.append((time.perf_counter_ns() - t) / 1000)
h.shutdown()
print(json.dumps(lat))
"""


def nbd_reads(v, work, n):
    """p50 and p99 microseconds of n random 4 KiB reads of the newest point, one at a time, and
    the server's peak RSS."""
    sock = os.path.join(work, "scale.sock")
    remove(sock)
    server = subprocess.Popen([REPLOG, "serve-nbd", v, "--latest", "--unix", sock],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(sock, 600)
        names = exports(sock)
        uri = f"nbd+unix:///{names[0] if names else ''}?socket={sock}"
        lat = json.loads(run(["/usr/bin/python3", "-c", READS, uri, str(n)]))
        return percentile(lat, 0.5), percentile(lat, 0.99), vmhwm(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


_exports = {}


def exports(sock):
    """The export names the server offers (nbdinfo --list), cached per socket."""
    if sock not in _exports:
        out = subprocess.run(["nbdinfo", "--list", "--json", f"nbd+unix:///?socket={sock}"],
                             capture_output=True, text=True)
        names = []
        if out.returncode == 0:
            names = [e["export-name"] for e in json.loads(out.stdout).get("exports", [])]
        _exports[sock] = names
    return _exports[sock]


def has_bench_read():
    return subprocess.run([REPLOG, "bench", "read", "--help"], capture_output=True).returncode == 0


def row(work, records, reads):
    v, built = build(work, records)
    r = {"records": records, "build": built}
    try:
        wall, rss, out = timed_rss([REPLOG, "checkpoint", v, "--json"])
        r["checkpoint"] = {"seconds": wall, "peak_rss_bytes": rss, **json.loads(out)}
    except RuntimeError as e:
        # A journal shorter than one segment has no sealed segment end to index.
        print(f"no checkpoint: {str(e).splitlines()[1]}", flush=True)
        r["checkpoint"] = {"seconds": 0.0, "peak_rss_bytes": 0}
    wall, rss, out = timed_rss([REPLOG, "bench", "resolve", v, "--json"])
    r["resolve"] = {"seconds": wall, "peak_rss_bytes": rss, **json.loads(out)}
    p50, p99, server_rss = nbd_reads(v, work, reads)
    r["nbd"] = {"p50_us": p50, "p99_us": p99, "peak_rss_bytes": server_rss}
    if has_bench_read():
        wall, rss, out = timed_rss([REPLOG, "bench", "read", v, "--latest", "--json"])
        r["read_pass"] = {"seconds": wall, "peak_rss_bytes": rss, **json.loads(out)}
    points = r["resolve"]["points"]
    keep = points - 1
    wall, rss, out = timed_rss([REPLOG, "prune", v, "--keep-last", str(keep), "--json"])
    r["prune"] = {"seconds": wall, "peak_rss_bytes": rss, "kept": keep, "points": points,
                  **json.loads(out)}
    if "--keep" not in sys.argv:
        remove(v)
        remove(os.path.join(work, f"scale-{records}.built"))
    else:
        # Prune moved the base: the next run must build again.
        remove(os.path.join(work, f"scale-{records}.built"))
    return r


def main():
    work = begin(load=True)
    reads = arg("--reads", 2000)
    rows, out = [], []
    for records in [int(float(x)) for x in arg("--records", "1000000,10000000").split(",")]:
        r = row(work, records, reads)
        out.append(r)
        res = {p["point"]: p for p in r["resolve"]["resolve"]}
        peak = max(x["peak_rss_bytes"] for x in (r["checkpoint"], r["resolve"], r["nbd"], r["prune"],
                                                 r.get("read_pass", {"peak_rss_bytes": 0})))
        read = r.get("read_pass")
        rows.append([
            f"{records:,} / {res['newest']['pieces']:,}",
            f"{r['resolve']['open_ms']:.0f} ms",
            f"{res['newest']['resolve_ms']:.0f} / {res['oldest']['resolve_ms']:.0f} ms",
            f"{r['nbd']['p50_us']:.0f} / {r['nbd']['p99_us']:.0f} µs",
            (f"{read['read_seconds']:.1f} s ({read['read_seconds'] * 1e6 / max(1, res['newest']['pieces']):.2f} "
             f"µs a piece), {read['peak_rss_bytes'] / MiB:.0f} MiB") if read else "n/a",
            f"{r['prune']['seconds']:.1f} s, {r['prune']['peak_rss_bytes'] / MiB:.0f} MiB",
            f"{peak / MiB:.0f} MiB",
        ])
        print(f"{records:,}: built in {r['build']['seconds']:.0f} s; checkpoint {r['checkpoint']['seconds']:.1f} s, "
              f"{r['checkpoint']['peak_rss_bytes'] / MiB:.0f} MiB; server {r['nbd']['peak_rss_bytes'] / MiB:.0f} MiB",
              flush=True)
    table("A 10 TiB sparse disk, random 64-byte writes (one extent each), 1000 points",
          ["records / visible pieces", "open", "time to first byte, newest / oldest",
           "NBD random 4 KiB read p50 / p99", "read pass", "prune", "peak RSS"], rows)
    write_out(out)


if __name__ == "__main__":
    main()
