#!/usr/bin/env python3
"""Checkpoint indexes at scale: writing the first one and the next incremental one, searching
one in place, and resolving a point from one.

  benches/checkpoint_scale.py WORKDIR [--records 1000000,10000000]

For each record count: `replog bench write --pattern rand --block 64` writes random 64-byte
records over a 100 GiB sparse disk (every record its own extent, the worst case) with a point
every 1000 records, into a vault with 16 MiB segments (about 130,000 records each). Then, each timed with its peak resident
memory (/usr/bin/time): `replog checkpoint --at-lsn MIDDLE` (the first checkpoint, from the
base, in steps of at most 2^20 LSNs), `replog checkpoint` (the next one, merged incrementally
from it), and `replog bench resolve` (open, resolve the newest/middle/oldest point, then 100,000
random lookups in the newest point's checkpoint opened in place). Vaults are removed after.
"""
import json, os, subprocess, sys

from benchkit import REPLOG, MiB, arg, build, remove, run, settle, table


def measured(cmd):
    """Runs cmd under /usr/bin/time; returns (seconds, peak RSS bytes, stdout)."""
    p = subprocess.run(["/usr/bin/time", "-f", "%e %M", *cmd], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stderr.strip()}")
    seconds, kib = p.stderr.strip().splitlines()[-1].split()
    return float(seconds), int(kib) * 1024, p.stdout


def main():
    work = sys.argv[1]
    build()
    rows, out = [], {}
    for records in [int(x) for x in arg("--records", "1000000,10000000").split(",")]:
        v = os.path.join(work, f"checkpoint-{records}")
        remove(v)
        run([REPLOG, "init", v, "--segment-size", "16MiB"])
        run([REPLOG, "bench", "write", v, "--pattern", "rand", "--block", "64", "--total", str(64 * records),
             "--point-every", str(64 * records // 1000), "--disk-size", "100GiB", "--json"])
        before = json.loads(run([REPLOG, "bench", "resolve", v, "--json"]))
        middle_lsn = next(x["lsn"] for x in before["resolve"] if x["point"] == "middle")
        settle()
        s1, rss1, o1 = measured([REPLOG, "checkpoint", v, "--at-lsn", str(middle_lsn), "--json"])
        first = json.loads(o1)
        settle()
        s2, rss2, o2 = measured([REPLOG, "checkpoint", v, "--json"])
        nxt = json.loads(o2)
        settle()
        s3, rss3, o3 = measured([REPLOG, "bench", "resolve", v, "--json"])
        after = json.loads(o3)
        out[records] = {"first": [s1, rss1, first], "next": [s2, rss2, nxt], "resolve": after,
                        "resolve_rss": rss3, "replay": before}
        newest = next(x for x in after["resolve"] if x["point"] == "newest")
        replay_newest = next(x for x in before["resolve"] if x["point"] == "newest")
        lk = after["lookup"] or {}
        rows.append([f"{records:,}",
                     f"{first['pieces']:,} in {s1:.1f} s, {rss1 / MiB:.0f} MiB",
                     f"{nxt['pieces']:,} in {s2:.1f} s, {rss2 / MiB:.0f} MiB",
                     f"{lk.get('open_ms', 0):.2f} ms + {lk.get('first_lookup_us', 0):.0f} us",
                     f"{lk.get('mean_lookup_us', 0):.1f} us",
                     f"{newest['resolve_ms']:.0f} ms (replay {replay_newest['resolve_ms']:.0f} ms)",
                     f"{rss3 / MiB:.0f}"])
        remove(v)
    table("Checkpoints: 100 GiB sparse disk, random 64-byte writes (one extent each), 1000 points",
          ["records", "first checkpoint (at the middle point, from the base)", "next, incremental (newest)",
           "open in place + first lookup", "lookup, mean of 100,000", "resolve newest point into memory",
           "resolve peak MiB"], rows)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
