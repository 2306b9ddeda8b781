#!/usr/bin/env python3
"""Failover against the peers, on the same data and disk, in one run.

  benches/failover_compare.py WORKDIR [--reps 3] [--out FILE] [--baseline OLD_REPLOG]
  benches/failover_compare.py WORKDIR --resolve [--records 1000000,10000000]

The workload is ../shared/peers/make_chain.py with its defaults: a 4 GiB disk (3 GiB of real
binary data) and 20 layers of 50 MiB of writes, as a qcow2 backing chain. The same data goes
into a vault: `disk add --from base.raw`, then for each layer the writes are applied to a
working copy of the image, `replog ingest` journals what changed and `replog point` marks it.
Then, interleaved (A B A B ...) with medians:

- `replog failover --latest` (synced before it returns) against
  `qemu-img convert -t writeback -O raw ov20.qcow2` (flushed before it returns) and against
  `cp --sparse=always base.raw` followed by `sync` of the copy;
- `replog failover --latest --read-back` (every byte summed while written and read back once
  placed) against the same `cp`;
- `replog failover --latest --no-sync` against `qemu-img convert -O raw ov20.qcow2` (its default
  cache mode, no flush);
- the middle point (layer 10) against ov10.qcow2, both synced;
- the vault's size on disk against the qcow2 chain's;
- with --baseline, the same failovers by another replog binary (an earlier build) on the same
  vault, interleaved with the rest, to measure what a change costs.

Every output is compared byte for byte with qemu-img's (`cmp`) once. Caches are warm for every
contender alike (the inputs fit in memory); dirty pages are flushed before each run. Each run's
peak RSS and CPU seconds (user + system, children included) come from /usr/bin/time.

With --resolve it measures opening a vault and resolving points with 10^6 and 10^7 journal
records (random 64-byte writes over a 100 GiB sparse disk, so every record is its own extent),
without and then with a checkpoint index.
"""
import json, os, statistics, subprocess, sys, time

from benchkit import MiB, REPLOG, allocated, arg, begin, chain, remove, run, table, write_out


def timed(cmd):
    """Runs cmd after flushing dirty pages; returns (wall seconds, peak RSS bytes, CPU seconds:
    user + system, children included)."""
    subprocess.run(["sync"], check=True)
    t = time.monotonic()
    out = subprocess.run(["/usr/bin/time", "-f", "%M %U %S"] + cmd, check=True, capture_output=True, text=True)
    wall = time.monotonic() - t
    rss, user, system = out.stderr.strip().splitlines()[-1].split()
    return wall, int(rss) * 1024, float(user) + float(system)


def import_chain(work, c):
    """The chain's data as a vault: base, then one ingest and point per layer."""
    v = os.path.join(work, "failover-vault")
    img = os.path.join(work, "failover-work.raw")
    if os.path.exists(os.path.join(v, "MANIFEST")) and len(json.loads(run([REPLOG, "points", v, "--json"]))) == 21:
        return v
    remove(v)
    run([REPLOG, "init", v, "--block-size", "4KiB"])
    run(["cp", "--sparse=always", os.path.join(c, "base.raw"), img])
    t = time.monotonic()
    run([REPLOG, "disk", "add", v, "d", "--from", img])
    run([REPLOG, "point", v, "--label", "base"])
    for k in range(1, 21):
        with open(img, "r+b") as f, open(os.path.join(c, f"layer{k:02d}.writes")) as w:
            for line in w:
                o, n, p = map(int, line.split())
                f.seek(o)
                f.write(bytes([p]) * n)
        run([REPLOG, "ingest", v, "d", "--from", img])
        run([REPLOG, "point", v, "--label", f"layer{k:02d}"])
    print(f"imported the chain into {v} in {time.monotonic() - t:.1f} s")
    remove(img)
    return v


def failover(work, reps):
    c = chain(work)
    v = import_chain(work, c)
    points = json.loads(run([REPLOG, "points", v, "--json"]))
    middle = next(p["id"] for p in points if p["label"] == "layer10")
    out = os.path.join(work, "out")

    def fo(*extra, binary=REPLOG):
        def go():
            remove(out)
            return timed([binary, "failover", v, "--out", out] + list(extra))
        return go

    def qemu(src, *extra):
        def go():
            remove(out)
            os.makedirs(out)
            return timed(["qemu-img", "convert"] + list(extra) + ["-O", "raw", os.path.join(c, src), os.path.join(out, "q.raw")])
        return go

    def cp():
        remove(out)
        os.makedirs(out)
        dst = os.path.join(out, "cp.raw")
        return timed(["sh", "-c", f"cp --sparse=always {os.path.join(c, 'base.raw')} {dst} && sync {dst}"])

    # Same bytes: the newest and middle points against qemu-img's output.
    for point, src in (("--latest", "ov20.qcow2"), (str(middle), "ov10.qcow2")):
        remove(out)
        run([REPLOG, "failover", v, "--out", out] + (["--latest"] if point == "--latest" else ["--point", point]))
        run(["qemu-img", "convert", "-O", "raw", os.path.join(c, src), os.path.join(out, "q.raw")])
        run(["cmp", os.path.join(out, "d.raw"), os.path.join(out, "q.raw")])
    print("outputs identical to qemu-img's for the newest and the middle point")

    contenders = {
        "replog failover --latest": fo("--latest"),
        "qemu-img convert -t writeback ov20": qemu("ov20.qcow2", "-t", "writeback"),
        "cp --sparse=always + sync": cp,
        "replog failover --latest --read-back": fo("--latest", "--read-back"),
        "replog failover --latest --no-sync": fo("--latest", "--no-sync"),
        "qemu-img convert ov20 (default, no flush)": qemu("ov20.qcow2"),
        "replog failover --point middle": fo("--point", str(middle)),
        "qemu-img convert -t writeback ov10": qemu("ov10.qcow2", "-t", "writeback"),
    }
    baseline = arg("--baseline", "")
    if baseline:
        contenders["baseline failover --latest"] = fo("--latest", binary=baseline)
        contenders["baseline failover --latest --no-sync"] = fo("--latest", "--no-sync", binary=baseline)
    results = {k: [] for k in contenders}
    for _ in range(reps):
        for name, go in contenders.items():
            results[name].append(go())
    remove(out)
    med = {k: statistics.median(w for w, _, _ in r) for k, r in results.items()}
    rss = {k: max(m for _, m, _ in r) for k, r in results.items()}
    cpu = {k: statistics.median(c for _, _, c in r) for k, r in results.items()}
    pairs = [
        ("replog failover --latest", "qemu-img convert -t writeback ov20", 0.7),
        ("replog failover --latest", "cp --sparse=always + sync", 1.0),
        ("replog failover --latest --read-back", "cp --sparse=always + sync", 1.0),
        ("replog failover --latest --no-sync", "qemu-img convert ov20 (default, no flush)", 0.7),
        ("replog failover --point middle", "qemu-img convert -t writeback ov10", 0.7),
    ]
    if baseline:
        pairs += [
            ("replog failover --latest", "baseline failover --latest", "(the change's cost)"),
            ("replog failover --latest --no-sync", "baseline failover --latest --no-sync", "(the change's cost)"),
        ]
    table(f"Failover of the 4 GiB disk, 20 layers of 50 MiB (median of {reps}, interleaved)",
          ["replog", "s", "peer", "s", "ratio", "target"],
          [[a, f"{med[a]:.2f}", b, f"{med[b]:.2f}", f"{med[a] / med[b]:.2f}x",
            f"<= {t}x" if isinstance(t, float) else t] for a, b, t in pairs])
    table("Peak resident memory and CPU time (user + system, median)", ["command", "peak MiB", "CPU s"],
          [[k, f"{v / MiB:.0f}", f"{cpu[k]:.2f}"] for k, v in rss.items()])
    chain_files = [os.path.join(c, "base.qcow2")] + [os.path.join(c, f"ov{k:02d}.qcow2") for k in range(1, 21)]
    chain_bytes = sum(allocated(f) for f in chain_files)
    vault_bytes = allocated(v)
    table("Size on disk", ["vault", "qcow2 chain (base + 20 overlays)", "ratio"],
          [[f"{vault_bytes / MiB:.0f} MiB", f"{chain_bytes / MiB:.0f} MiB", f"{vault_bytes / chain_bytes:.2f}x"]])
    return {"median_s": med, "peak_rss_bytes": rss, "cpu_s": cpu, "vault_bytes": vault_bytes, "chain_bytes": chain_bytes}


def resolve(work):
    rows, out = [], {}
    for records in [int(x) for x in arg("--records", "1000000,10000000").split(",")]:
        v = os.path.join(work, f"resolve-{records}")
        remove(v)
        run([REPLOG, "init", v, "--segment-size", "64MiB"])
        run([REPLOG, "bench", "write", v, "--pattern", "rand", "--block", "64", "--total", str(64 * records),
             "--point-every", str(64 * records // 1000), "--disk-size", "100GiB", "--json"])
        before = json.loads(run([REPLOG, "bench", "resolve", v, "--json"]))
        # Checkpoints at the sealed segment ends just before the middle point and the newest, as
        # maintenance would have left them while the journal grew.
        middle_lsn = next(x["lsn"] for x in before["resolve"] if x["point"] == "middle")
        # (No sealed segment may end before the middle point of a short journal: then none.)
        subprocess.run([REPLOG, "checkpoint", v, "--at-lsn", str(middle_lsn)], capture_output=True)
        cp = json.loads(run([REPLOG, "checkpoint", v, "--json"]))
        after = json.loads(run([REPLOG, "bench", "resolve", v, "--json"]))
        out[records] = {"without": before, "checkpoint": cp, "with": after}
        for label, r in (("journal replay", before), ("from checkpoint", after)):
            newest = next(x for x in r["resolve"] if x["point"] == "newest")
            middle = next(x for x in r["resolve"] if x["point"] == "middle")
            rows.append([f"{records:,}", label, f"{r['open_ms']:.1f}", f"{newest['resolve_ms']:.0f}",
                         f"{middle['resolve_ms']:.0f}", f"{newest['pieces']:,}", f"{r['peak_rss_bytes'] / MiB:.0f}"])
        rows.append([f"{records:,}", f"(checkpoint: {cp['pieces']:,} pieces, {cp['file_bytes'] / MiB:.0f} MiB, "
                     f"written in {cp['seconds']:.1f} s)", "", "", "", "", ""])
        if records <= 2_000_000:
            # A failover of the newest point, for its memory: every record is its own 4 KiB
            # block on the output's filesystem, so 10^7 would need 40 GB of scratch space.
            dst = os.path.join(work, "resolve-out")
            remove(dst)
            fo = json.loads(run([REPLOG, "failover", v, "--latest", "--no-sync", "--out", dst, "--json"]))
            remove(dst)
            out[records]["failover"] = fo
            rows.append([f"{records:,}", f"(failover --latest: {fo['seconds']:.1f} s, peak {fo['peak_rss_bytes'] / MiB:.0f} MiB)",
                         "", "", "", "", ""])
        remove(v)
    table("Open and resolve, 100 GiB sparse disk, random 64-byte writes (one extent each), 1000 points",
          ["records", "start", "open ms", "newest point ms", "middle point ms", "pieces at newest", "peak MiB"], rows)
    return out


def main():
    work = begin(load=True)
    out = resolve(work) if "--resolve" in sys.argv else failover(work, arg("--reps", 3))
    write_out(out)


if __name__ == "__main__":
    main()
