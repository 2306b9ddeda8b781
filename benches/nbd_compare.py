#!/usr/bin/env python3
"""replog's NBD server against replog's own paths, on the same vault, in one run.

  benches/nbd_compare.py WORKDIR [--reps 3] [--size-gib 2] [--changed-mib 128] [--capture-gib 1]

Two comparisons, each run interleaved (A B A B ...) with medians reported, so drift of a shared,
noisy machine hits both sides alike:

- Reading a point out: `replog failover` of the point against `nbdcopy` of the same point out
  of `replog serve-nbd` into a file. Both make their output durable (failover syncs by default,
  nbdcopy gets --flush). The nbdcopy time is given with and without starting the server.
- Capture: `nbdcopy --request-size=1048576` of a file of random bytes into `serve-nbd --capture` of a
  new empty disk (flushed at the end), against `replog bench write --block 1MiB` of the same size
  (one point at the end). Both end with everything durable.

The disk is SIZE GiB: real binary data (files under /usr/lib) for the first 3/4, sparse after,
seeded as a base image, then CHANGED MiB of random 64 KiB blocks ingested into the journal.
The page cache is left warm for both sides alike. Prints Markdown (the NBD section of
BENCHMARKS.md).

Needs: a release build of replog (built here unless REPLOG=PATH names one), qemu-img and nbdcopy
(scripts/setup.sh).
"""
import json, os, random, statistics, subprocess, sys, time

from benchkit import GiB, MiB, REPLOG, arg, begin, remove, run, table, timed, write_out


class Server:
    """`replog serve-nbd VAULT ARGS --unix SOCKET`, ready once it prints "listening on"."""

    def __init__(self, vault, args, socket):
        remove(socket)
        self.socket = socket
        self.p = subprocess.Popen([REPLOG, "serve-nbd", vault] + args + ["--unix", socket],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in self.p.stdout:
            if line.startswith("listening on"):
                return
        raise RuntimeError("serve-nbd exited: " + self.p.stderr.read())

    def uri(self, export):
        return f"nbd+unix:///{export}?socket={self.socket}"

    def stop(self):
        self.p.terminate()
        if self.p.wait(timeout=300) != 0:
            raise RuntimeError("serve-nbd failed: " + self.p.stderr.read())


def make_source(work, size, changed):
    """The vault with disk "os": base from real data, then `changed` bytes ingested; returns
    (vault, point id, image at the point)."""
    base = os.path.join(work, "base.raw")
    if not os.path.exists(base) or os.path.getsize(base) != size:
        remove(base)
        subprocess.run(
            "( find /usr/lib -type f -size +0 2>/dev/null | LC_ALL=C sort | "
            "while read -r f; do cat \"$f\" 2>/dev/null; done ) | head -c %d > %s" % (size * 3 // 4, base),
            shell=True, check=True)
        os.truncate(base, size)
    image = os.path.join(work, "os.raw")
    run(["cp", "--sparse=always", base, image])
    vault = os.path.join(work, "vault")
    remove(vault)
    run([REPLOG, "init", vault])
    run([REPLOG, "disk", "add", vault, "os", "--from", image])
    run([REPLOG, "point", vault, "--label", "seeded"])
    rng = random.Random(1)
    block = 64 << 10
    with open(image, "r+b") as f:
        for _ in range(changed // block):
            f.seek(rng.randrange(0, size // block) * block)
            f.write(rng.randbytes(block))
    run([REPLOG, "ingest", vault, "os", "--from", image])
    point = int(run([REPLOG, "point", vault]).strip())
    return vault, point, image


def read_out(work, reps, size, changed):
    vault, point, image = make_source(work, size, changed)
    out = os.path.join(work, "out")
    copy = os.path.join(work, "copy.raw")
    sock = os.path.join(work, "nbd.sock")
    server_start = []

    def failover():
        remove(out)
        return timed([REPLOG, "failover", vault, "--point", str(point), "--out", out])[0]

    def nbdcopy():
        remove(copy)
        started = time.monotonic()
        s = Server(vault, ["--point", str(point)], sock)
        server_start.append(time.monotonic() - started)
        t, _ = timed(["nbdcopy", "--flush", s.uri("os"), copy])
        s.stop()
        return t

    results = {"failover": [], "nbdcopy": []}
    for _ in range(reps):
        results["failover"].append(failover())
        results["nbdcopy"].append(nbdcopy())
    run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", copy, image])
    run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", os.path.join(out, "os.raw"), image])
    remove(out), remove(copy)
    f, n, st = (statistics.median(results["failover"]), statistics.median(results["nbdcopy"]),
                statistics.median(server_start))
    mb = size / 1e6
    table(f"Reading point {point} out: a {size / GiB:.1f} GiB disk "
          f"({size * 3 // 4 / GiB:.2f} GiB of data in the base, {changed // MiB} MiB changed in the journal)",
          ["method", "seconds (median of %d)" % reps, "disk MB/s"],
          [["`replog failover` (synced)", f"{f:.2f}", f"{mb / f:.0f}"],
           ["`nbdcopy --flush` out of `serve-nbd --point` (server started)", f"{n + st:.2f}", f"{mb / (n + st):.0f}"],
           ["the same, nbdcopy alone", f"{n:.2f}", f"{mb / n:.0f}"]])
    return {"failover_s": results["failover"], "nbdcopy_s": results["nbdcopy"], "server_start_s": server_start}


def capture(work, reps, total):
    src = os.path.join(work, "capture-src.raw")
    if not os.path.exists(src) or os.path.getsize(src) != total:
        with open(src, "wb") as f:
            for _ in range(total // (16 * MiB)):
                f.write(os.urandom(16 * MiB))
    vault = os.path.join(work, "capture-vault")
    bench = os.path.join(work, "bench-vault")
    sock = os.path.join(work, "capture.sock")

    def nbd():
        remove(vault)
        run([REPLOG, "init", vault])
        run([REPLOG, "disk", "add", vault, "cap", "--size", str(total)])
        s = Server(vault, ["--capture"], sock)
        t, _ = timed(["nbdcopy", "--flush", "--request-size=1048576", src, s.uri("cap")])
        s.stop()
        remove(vault)
        return total / t / 1e6

    def writer():
        remove(bench)
        j = json.loads(run([REPLOG, "bench", "write", bench, "--block", "1MiB", "--total", str(total),
                            "--point-every", str(total), "--json"]))
        remove(bench)
        return j["mb_per_s"]

    results = {"nbd": [], "writer": []}
    for _ in range(reps):
        results["nbd"].append(nbd())
        results["writer"].append(writer())
    remove(src)
    table(f"Capture: {total / GiB:.1f} GiB of random data in 1 MiB writes, durable at the end",
          ["method", "MB/s (median of %d)" % reps],
          [["`nbdcopy --request-size=1048576 --flush` into `serve-nbd --capture`", f"{statistics.median(results['nbd']):.0f}"],
           ["`replog bench write --block 1MiB` (the writer API, no network)", f"{statistics.median(results['writer']):.0f}"]])
    return results


def main():
    reps = arg("--reps", 3)
    work = begin()
    print(f"command: benches/nbd_compare.py WORKDIR {' '.join(sys.argv[2:])}".rstrip())
    out = {"read": read_out(work, reps, arg("--size-gib", 2) * GiB, arg("--changed-mib", 128) * MiB),
           "capture": capture(work, reps, arg("--capture-gib", 1) * GiB)}
    write_out(out)


if __name__ == "__main__":
    main()
