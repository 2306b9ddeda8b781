#!/usr/bin/env python3
"""replog against the physical limit (fio) and the peers, on the same disk, in one run.

  benches/compare.py WORKDIR [--reps 3] [--seq-total-gib 2] [--only NAME[,NAME]] [--out FILE]

Every comparison runs its contenders interleaved (A B A B ...) and reports medians, so drift of a
shared, noisy disk hits both sides alike. Results print as Markdown tables (the body of
BENCHMARKS.md) and, with --out, are also written as JSON.

Needs: a release build of replog (built here unless REPLOG=PATH names one), fio, qemu-img/qemu-io
(scripts/setup.sh).
"""
import json, os, statistics, subprocess, time

from benchkit import REPLOG, GiB, MiB, arg, begin, chain, med, remove, run, settle, table, write_out


def drop(path):
    """Deletes a contender's files, then lets the disk settle (benchkit.settle)."""
    remove(path)
    settle()


def fio(work, name, extra):
    """Runs one fio job; returns (MB/s, sync latency p50 us, p99 us, IOPS)."""
    f = os.path.join(work, "fio.dat")
    out = run(["fio", "--name=" + name, "--filename=" + f, "--output-format=json"] + extra)
    drop(f)
    j = json.loads(out)["jobs"][0]
    w, s = j["write"], j.get("sync", {}).get("lat_ns", {}).get("percentile", {})
    return {"mb_per_s": w["bw_bytes"] / 1e6, "iops": w["iops"],
            "sync_us_p50": s.get("50.000000", 0) / 1e3, "sync_us_p99": s.get("99.000000", 0) / 1e3}


def bench_write(work, backend, extra):
    v = os.path.join(work, "bench-vault")
    drop(v)
    out = run([REPLOG, "--backend", backend, "bench", "write", v, "--json"] + extra)
    drop(v)
    return json.loads(out)


def interleave(reps, contenders):
    """contenders: {name: fn() -> dict}; returns {name: [dict, ...]} run A B A B."""
    results = {k: [] for k in contenders}
    for _ in range(reps):
        for name, fn in contenders.items():
            results[name].append(fn())
    return results


def seq_writes(work, reps, total_gib):
    total = f"{total_gib}GiB"
    c = {
        "fio": lambda: fio(work, "seq", ["--rw=write", f"--size={total}", "--ioengine=io_uring", "--bs=1m",
                                        "--iodepth=32", "--fdatasync=64"]),
        "fio --direct=1": lambda: fio(work, "seq", ["--rw=write", f"--size={total}", "--ioengine=io_uring", "--bs=1m",
                                                    "--iodepth=32", "--fdatasync=64", "--direct=1"]),
        "replog uring": lambda: bench_write(work, "uring", ["--total", total, "--block", "1MiB", "--point-every", "64MiB"]),
        "replog uring --direct": lambda: bench_write(work, "uring", ["--total", total, "--block", "1MiB", "--point-every", "64MiB",
                                                                   "--direct", "true"]),
        "replog sync": lambda: bench_write(work, "sync", ["--total", total, "--block", "1MiB", "--point-every", "64MiB"]),
        "replog uring, 2 points in flight": lambda: bench_write(work, "uring", ["--total", total, "--block", "1MiB", "--point-every", "64MiB",
                                                                              "--points-in-flight", "2"]),
    }
    r = interleave(reps, c)
    f = med(r["fio"], "mb_per_s")
    fd = med(r["fio --direct=1"], "mb_per_s")
    rows = [[k, f"{med(v, 'mb_per_s'):.0f}", f"{med(v, 'mb_per_s') / f:.2f}x", f"{med(v, 'mb_per_s') / fd:.2f}x"]
            for k, v in r.items()]
    table(f"1. Sequential 1 MiB writes, a point every 64 MiB, {total_gib} GiB (median of {reps})",
          ["contender", "MB/s", "vs fio", "vs fio --direct=1"], rows)
    return r


def rand_writes(work, reps):
    writes = 65536
    c = {
        "fio": lambda: fio(work, "rand", ["--rw=randwrite", "--size=4G", f"--io_size={writes * 4096}",
                                         "--ioengine=io_uring", "--bs=4k", "--iodepth=32", "--fdatasync=1000"]),
        "replog uring": lambda: bench_write(work, "uring", ["--pattern", "rand", "--block", "4KiB", "--total", f"{writes * 4}KiB",
                                                         "--disk-size", "4GiB", "--point-every", "4000KiB"]),
        "replog sync": lambda: bench_write(work, "sync", ["--pattern", "rand", "--block", "4KiB", "--total", f"{writes * 4}KiB",
                                                       "--disk-size", "4GiB", "--point-every", "4000KiB"]),
    }
    r = interleave(reps, c)
    f = med(r["fio"], "iops")
    rows = [[k, f"{med(v, 'iops'):.0f}", f"{med(v, 'mb_per_s'):.0f}", f"{med(v, 'iops') / f:.2f}x"] for k, v in r.items()]
    table(f"2. Random 4 KiB writes over a 4 GiB disk, a point every 1000 writes, {writes} writes (median of {reps})",
          ["contender", "IOPS", "MB/s", "vs fio"], rows)
    return r


def point_latency(work, reps):
    n = 2000
    c = {
        "fio": lambda: fio(work, "lat", ["--rw=write", f"--size={n * 4}k", "--ioengine=io_uring", "--bs=4k",
                                        "--iodepth=1", "--fdatasync=1"]),
        "replog uring": lambda: bench_write(work, "uring", ["--block", "4KiB", "--total", f"{n * 4}KiB", "--point-every", "4KiB"]),
        "replog sync": lambda: bench_write(work, "sync", ["--block", "4KiB", "--total", f"{n * 4}KiB", "--point-every", "4KiB"]),
    }
    r = interleave(reps, c)
    f50, f99 = med(r["fio"], "sync_us_p50"), med(r["fio"], "sync_us_p99")
    rows = [["fio fdatasync", f"{f50:.0f}", f"{f99:.0f}", "1.00x"]]
    for k in ("replog uring", "replog sync"):
        p50, p99 = med(r[k], "point_latency_us_p50"), med(r[k], "point_latency_us_p99")
        rows.append([k + " point", f"{p50:.0f}", f"{p99:.0f}", f"{p50 / f50:.2f}x"])
    table(f"3. Recovery-point latency right after a 4 KiB write, {n} points (median of {reps})",
          ["contender", "p50 us", "p99 us", "p50 vs fio"], rows)
    return r


def ingest(vault, disk, image, extra_init=()):
    out = run([REPLOG, "ingest", vault, disk, "--from", image, "--json"])
    return json.loads(out)


def lz4_ingest(work, reps):
    base = os.path.join(chain(work), "base.raw")
    size = os.path.getsize(base)
    rows, r = [], []
    for _ in range(reps):
        v = os.path.join(work, "lz4-vault")
        drop(v)
        run([REPLOG, "init", v, "--compression", "lz4"])
        run([REPLOG, "disk", "add", v, "d", "--size", str(size)])
        t = time.monotonic()
        j = ingest(v, "d", base)
        j["wall"] = time.monotonic() - t
        r.append(j)
        drop(v)
    mbps = statistics.median(size / x["wall"] / 1e6 for x in r)
    ratio = statistics.median(x["bytes_changed"] / max(1, x["bytes_stored"]) for x in r)
    table(f"4. LZ4 ingest of base.raw ({size // GiB} GiB, disk-like data) into an empty disk (median of {reps})",
          ["MB/s of image", "compression ratio (changed / stored)", "bytes changed", "bytes stored"],
          [[f"{mbps:.0f}", f"{ratio:.2f}", r[0]["bytes_changed"], r[0]["bytes_stored"]]])
    return r


def changed_ingest(work, reps):
    base = os.path.join(chain(work), "base.raw")
    size = os.path.getsize(base)
    results = {}
    for pct in (1, 50):
        img = os.path.join(work, f"img-{pct}.raw")
        v = os.path.join(work, f"ingest-vault-{pct}")
        rows = {"replog ingest": [], "cat": []}
        for _ in range(reps):
            drop(v)
            run(["cp", "--sparse=always", base, img])
            run([REPLOG, "init", v])
            run([REPLOG, "disk", "add", v, "d", "--from", img])
            # Change pct% of the image in 1 MiB pieces spread over the whole disk.
            step = max(1, 100 // pct)
            with open(img, "r+b") as f:
                for i in range(0, size // MiB, step):
                    f.seek(i * MiB)
                    f.write(os.urandom(MiB))
            t = time.monotonic()
            j = ingest(v, "d", img)
            rows["replog ingest"].append(time.monotonic() - t)
            t = time.monotonic()
            subprocess.run(f"cat {img} > /dev/null", shell=True, check=True)
            rows["cat"].append(time.monotonic() - t)
            drop(v)
        drop(img)
        ri, ct = statistics.median(rows["replog ingest"]), statistics.median(rows["cat"])
        results[pct] = {"ingest_s": ri, "cat_s": ct, "bytes_changed": j["bytes_changed"]}
        results[pct]["mb_per_s"] = size / ri / 1e6
    table(f"6. `replog ingest` of a {size // GiB} GiB image, against `cat IMAGE > /dev/null` (median of {reps})",
          ["changed", "ingest s", "MB/s scanned", "cat s", "ingest / cat"],
          [[f"{p}%", f"{x['ingest_s']:.2f}", f"{x['mb_per_s']:.0f}", f"{x['cat_s']:.2f}", f"{x['ingest_s'] / x['cat_s']:.2f}x"]
           for p, x in results.items()])
    return results


def main():
    reps = arg("--reps", 3)
    only = arg("--only", "seq,rand,latency,lz4,ingest").split(",")
    work = begin()
    out = {}
    if "seq" in only:
        out["seq"] = seq_writes(work, reps, arg("--seq-total-gib", 2))
    if "rand" in only:
        out["rand"] = rand_writes(work, reps)
    if "latency" in only:
        out["latency"] = point_latency(work, reps)
    if "lz4" in only:
        out["lz4"] = lz4_ingest(work, reps)
    if "ingest" in only:
        out["ingest"] = changed_ingest(work, reps)
    write_out(out)


if __name__ == "__main__":
    main()
