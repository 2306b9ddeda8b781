#!/usr/bin/env python3
"""The cost of one recovery point of an image-fed disk, three ways, on the same vault.

  benches/capture_compare.py WORKDIR [--reps 3] [--size-gib 8] [--changed-pct 1] [--cold]

A disk of SIZE GiB of random bytes is seeded into a vault (`disk add --format raw`), and kept
twice: as a raw image and as a qcow2 image with the same content. Each repetition writes
CHANGED percent of the disk (random 64 KiB blocks, the same writes to both images, with
qemu-io), with a fresh persistent dirty bitmap on the qcow2, then takes one point each way, in
an order that rotates from one repetition to the next so drift of a shared machine hits all
alike:

- full: `replog ingest VAULT d --from disk.raw --format raw`, which reads the whole image
  and compares every block with the digest cache;
- bitmap: `replog ingest VAULT d --from nbd+unix:///?socket=S --dirty-bitmap bN` against
  `qemu-nbd -r -B bN` of the qcow2;
- ranges: `replog ingest VAULT d --from disk.raw --format raw --changed-ranges LIST`, the
  list of the repetition's writes as JSON lines.

Each is one command, `ingest ... --point`, which takes the point with the writer of the
ingest once its records are durable (as `replicate` does each cycle). Bytes read: `bytes_read` of the ingest's
--json (the full scan's `bytes_scanned`), and for the bitmap way also the growth of qemu-nbd's
`rchar` (/proc/PID/io). The page cache is left warm for every way alike (the images fit in
memory here), or with --cold synced and dropped before each timed command (needs root).
Prints Markdown (the capture section of BENCHMARKS.md).

Needs: a release build of replog (built here unless REPLOG=PATH names one), qemu-img, qemu-io,
qemu-nbd.
"""
import json, os, random, statistics, subprocess, sys, time

from benchkit import (GiB, MiB, REPLOG, arg, build, drop_caches, proc_io, run, table, timed,
                      wait_for)

BLOCK = 64 << 10


def setup(work, size):
    raw, qcow = os.path.join(work, "disk.raw"), os.path.join(work, "disk.qcow2")
    vault = os.path.join(work, "vault")
    with open(raw, "wb") as f, open("/dev/urandom", "rb") as r:
        for _ in range(size // (64 * MiB)):
            f.write(r.read(64 * MiB))
    run(["qemu-img", "convert", "-O", "qcow2", raw, qcow])
    run([REPLOG, "init", vault])
    run([REPLOG, "disk", "add", vault, "d", "--from", raw, "--format", "raw"])
    run([REPLOG, "point", vault])
    return raw, qcow, vault


def write_changes(work, raw, qcow, size, pct, rep):
    """Writes pct% of the disk in random 64 KiB blocks to both images; returns the list."""
    rng = random.Random(rep)
    blocks = sorted(rng.sample(range(size // BLOCK), int(size * pct / 100) // BLOCK))
    cmds = []
    for b in blocks:
        cmds += ["-c", f"write -P {rng.randrange(1, 256)} {b * BLOCK} {BLOCK}"]
    run(["qemu-io", "-f", "raw"] + cmds + [raw])
    run(["qemu-io", "-f", "qcow2"] + cmds + [qcow])
    listed = os.path.join(work, f"changes{rep}.jsonl")
    with open(listed, "w") as f:
        for b in blocks:
            f.write(json.dumps({"offset": b * BLOCK, "length": BLOCK}) + "\n")
    return listed, len(blocks) * BLOCK


def full(vault, raw, **_):
    secs, out = timed([REPLOG, "ingest", vault, "d", "--from", raw, "--format", "raw", "--point",
                       "--json"])
    return secs, json.loads(out)["bytes_scanned"], None


def bitmap(vault, qcow, work, bitmap_name, **_):
    sock = os.path.join(work, "nbd.sock")
    if os.path.exists(sock):
        os.remove(sock)
    server = subprocess.Popen(["qemu-nbd", "-r", "-t", "-f", "qcow2", "-B", bitmap_name, "-k",
                               sock, qcow])
    try:
        wait_for(sock)
        time.sleep(0.1)
        before = proc_io(server.pid, "rchar")
        uri = f"nbd+unix:///?socket={sock}"
        secs, out = timed([REPLOG, "ingest", vault, "d", "--from", uri, "--dirty-bitmap",
                           bitmap_name, "--point", "--json"])
        served = proc_io(server.pid, "rchar") - before
    finally:
        server.terminate()
        server.wait()
    done = json.loads(out)
    return secs, done["bytes_read"], (served, done["bytes_marked"])


def ranges(vault, raw, listed, **_):
    secs, out = timed([REPLOG, "ingest", vault, "d", "--from", raw, "--format", "raw",
                       "--changed-ranges", listed, "--point", "--json"])
    return secs, json.loads(out)["bytes_read"], None


def main():
    work = sys.argv[1]
    reps, size = arg("--reps", 3), arg("--size-gib", 8) * GiB
    pct = arg("--changed-pct", 1.0)
    os.makedirs(work, exist_ok=True)
    build()
    raw, qcow, vault = setup(work, size)
    ways = [("full", full), ("bitmap", bitmap), ("ranges", ranges)]
    results = {name: [] for name, _ in ways}
    for rep in range(reps):
        name_b = f"b{rep}"
        run(["qemu-img", "bitmap", "--add", "--enable", qcow, name_b])
        listed, changed = write_changes(work, raw, qcow, size, pct, rep)
        order = ways[rep % 3:] + ways[:rep % 3]
        for name, way in order:
            if "--cold" in sys.argv:
                drop_caches()
            secs, read, extra = way(vault=vault, raw=raw, qcow=qcow, work=work,
                                    bitmap_name=name_b, listed=listed)
            results[name].append((secs, read, extra, changed))
            print(f"rep {rep} {name}: {secs:.2f}s, read {read} {extra or ''}", file=sys.stderr)
        run(["qemu-img", "bitmap", "--remove", qcow, name_b])
    report(results, size, pct, reps)


def report(results, size, pct, reps):
    cache = "dropped before each command" if "--cold" in sys.argv else "warm"
    print(f"Disk {size // GiB} GiB of random bytes, {pct}% of it written between points "
          f"(random 64 KiB blocks), {reps} interleaved repetitions, page cache {cache}; "
          f"seconds are `ingest ... --point`, median (each run).\n")
    rows = []
    full_median = statistics.median(r[0] for r in results["full"])
    for name, runs in results.items():
        secs = statistics.median(r[0] for r in runs)
        each = ", ".join(f"{r[0]:.2f}" for r in runs)
        read = runs[-1][1]
        dirty = runs[-1][3]
        served = runs[-1][2][0] if runs[-1][2] else None
        rows.append([name, f"{secs:.2f} ({each}); full / this = {full_median / secs:.1f}",
                     f"{read / MiB:.1f} MiB", f"{read / dirty:.2f}x",
                     "" if served is None else f"{served / MiB:.1f} MiB"])
    table(None, ["way", "seconds", "bytes read", "vs dirty", "qemu-nbd rchar"], rows)


if __name__ == "__main__":
    main()
