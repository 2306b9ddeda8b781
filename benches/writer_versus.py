#!/usr/bin/env python3
"""The writer's throughput, this build against another replog binary, interleaved.

  benches/writer_versus.py WORKDIR --baseline OLD_REPLOG [--reps 5] [--out FILE]

Three loads, each run by both binaries in turn (new, old, new, old, ...) on the same disk, a
fresh vault each time: sequential 1 MiB writes (2 GiB, a point every 64 MiB), random 4 KiB
writes (65,536 over a 4 GiB disk, a point every 1000), both through `replog bench write` on
io_uring; and `replog ingest` of a 2 GiB image of random data into an empty disk (both cores:
records digested, checksummed and framed in parallel). Reports medians and new / old. What a
change to the write path (a per-record hash, sealing) costs is the ratio.
"""
import json, os, sys

from benchkit import REPLOG, GiB, MiB, arg, begin, med, remove, run, settle, table, timed, write_out


def bench_write(binary, work, extra):
    v = os.path.join(work, "versus-vault")
    remove(v)
    settle()
    out = json.loads(run([binary, "--backend", "uring", "bench", "write", v, "--json"] + extra))
    remove(v)
    return {"mb_per_s": out["mb_per_s"]}


def ingest(binary, work, image):
    v = os.path.join(work, "versus-vault")
    remove(v)
    run([binary, "init", v])
    run([binary, "disk", "add", v, "d", "--size", str(os.path.getsize(image))])
    settle()
    seconds, _ = timed([binary, "ingest", v, "d", "--from", image])
    remove(v)
    return {"mb_per_s": os.path.getsize(image) / seconds / 1e6}


def main():
    work = begin(load=True)
    old = arg("--baseline", "")
    if not old:
        sys.exit("--baseline OLD_REPLOG is required")
    reps = arg("--reps", 5)
    image = os.path.join(work, "versus-random.img")
    if not os.path.exists(image):
        with open(image, "wb") as f:
            for _ in range(2 * GiB // (64 * MiB)):
                f.write(os.urandom(64 * MiB))
    loads = {
        "sequential 1 MiB, MB/s": lambda b: bench_write(
            b, work, ["--total", "2GiB", "--block", "1MiB", "--point-every", "64MiB"]),
        "random 4 KiB, MB/s": lambda b: bench_write(
            b, work, ["--pattern", "rand", "--block", "4KiB", "--total", "256MiB",
                      "--disk-size", "4GiB", "--point-every", "4000KiB"]),
        "ingest of 2 GiB random, MB/s": lambda b: ingest(b, work, image),
    }
    results, rows = {}, []
    for name, load in loads.items():
        runs = {"new": [], "old": []}
        for _ in range(reps):
            runs["new"].append(load(REPLOG))
            runs["old"].append(load(old))
        new, base = med(runs["new"], "mb_per_s"), med(runs["old"], "mb_per_s")
        results[name] = runs
        rows.append([name, f"{new:.0f}", f"{base:.0f}", f"{new / base:.2f}x"])
    table(f"The write path, this build against {old} (median of {reps}, interleaved)",
          ["load", "this build", "baseline", "this / baseline"], rows, level=4)
    write_out(results)


if __name__ == "__main__":
    main()
