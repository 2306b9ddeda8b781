#!/usr/bin/python3
"""`replog failover --live`: time to first byte, read latency during hydration, hydration
throughput against `cp --sparse=always` + sync, and peak RSS.

  /usr/bin/python3 benches/live_failover.py WORKDIR [--data-mib 1024] [--reads 2000]

Needs python3-libnbd (the system python's `nbd` module) and a release build (REPLOG=PATH to
use another binary).

- Time to first byte: a vault with one sparse disk of 1 GiB and one of 16 GiB (64 MiB of random
  data at its start each); from starting the live failover to its `serving` event (the socket is
  bound and answers), and to a libnbd client having read block 0. Median of 5 each.
- Read latency: a disk of --data-mib MiB of random data hydrating at --rate 64M; --reads random
  4 KiB reads through libnbd while it runs, p50 and p99; then, still hydrating, 50 runs each of
  `nbdinfo URI` and `qemu-io -r -f raw URI -c 'read OFF 4096'` at random offsets, p50 and p99
  of each whole command (process start, connection, handshake and the read).
- Throughput: the same disk hydrated with no rate and no client (the command exits once the
  image is complete and synced), against `cp --sparse=always` of the source image plus `sync`.
  Dirty pages are flushed before each run; caches are warm for both.
- Peak RSS: the `finished` event's `peak_rss_bytes` of that run.
"""
import json, os, random, signal, statistics, subprocess, sys, time

import nbd  # python3-libnbd

HERE = os.path.dirname(os.path.abspath(__file__))
REPLOG = os.environ.get("REPLOG") or os.path.join(HERE, "..", "target", "release", "replog")
MiB = 1 << 20


def arg(name, default):
    return type(default)(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def make_vault(work, disks):
    """A vault with disks [(name, size_bytes, data_bytes)]: random data at the start, the rest
    sparse; one point. Returns the vault and the source images."""
    vault = os.path.join(work, "V")
    subprocess.run(["rm", "-rf", vault], check=True)
    run(REPLOG, "init", vault)
    images = {}
    for name, size, data in disks:
        image = os.path.join(work, f"{name}.raw")
        with open(image, "wb") as f:
            f.truncate(size)
            left = data
            while left:
                n = min(left, 8 * MiB)
                f.write(os.urandom(n))
                left -= n
        run(REPLOG, "disk", "add", vault, name, "--from", image)
        images[name] = image
    run(REPLOG, "point", vault)
    return vault, images


class Live:
    """A running `replog failover VAULT --latest --live --json` on a Unix socket."""

    def __init__(self, vault, out, sock, *more):
        subprocess.run(["rm", "-rf", out], check=True)
        self.sock = sock
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(
            [REPLOG, "failover", vault, "--latest", "--out", out, "--live", "--json",
             "--unix", sock, *more],
            stdout=subprocess.PIPE, text=True)
        self.serving_s = self.wait("serving")

    def wait(self, event):
        for line in self.p.stdout:
            e = json.loads(line)
            if e["event"] == event:
                self.last = e
                return time.monotonic() - self.t0
        raise SystemExit(f"replog ended before {event}")

    def client(self, export):
        h = nbd.NBD()
        h.connect_uri(f"nbd+unix:///{export}?socket={self.sock}")
        return h

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        self.p.wait()


def first_byte(work):
    rows = []
    vault, _ = make_vault(work, [("g1", 1 << 30, 64 * MiB), ("g16", 16 << 30, 64 * MiB)])
    for export in ["g1", "g16"]:
        serving, block0 = [], []
        for i in range(5):
            live = Live(vault, os.path.join(work, "out"), os.path.join(work, "s.sock"))
            h = live.client(export)
            h.pread(4096, 0)
            block0.append(time.monotonic() - live.t0)
            serving.append(live.serving_s)
            h.shutdown()
            live.stop()
        rows.append((export, statistics.median(serving), statistics.median(block0)))
    return rows


def latency_and_throughput(work, data_mib, reads):
    size = data_mib * MiB
    vault, images = make_vault(work, [("d", size, size)])
    out = os.path.join(work, "out")
    live = Live(vault, out, os.path.join(work, "s.sock"), "--rate", "64M")
    h = live.client("d")
    lat = []
    rnd = random.Random(7)
    for _ in range(reads):
        at = rnd.randrange(size // 4096) * 4096
        t = time.perf_counter()
        h.pread(4096, at)
        lat.append((time.perf_counter() - t) * 1e3)
    h.shutdown()
    uri = f"nbd+unix:///d?socket={live.sock}"
    tools = {"nbdinfo": [], "qemu-io read": []}
    for _ in range(50):
        at = rnd.randrange(size // 4096) * 4096
        for name, cmd in (("nbdinfo", ["nbdinfo", uri]),
                          ("qemu-io read", ["qemu-io", "-r", "-f", "raw", uri, "-c", f"read {at} 4096"])):
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            tools[name].append((time.perf_counter() - t) * 1e3)
    hydrating = live.p.poll() is None
    live.stop()
    assert hydrating, "hydration ended before the client commands: give a larger --data-mib"
    p50, p99 = percentiles(lat)
    tools = {name: percentiles(v) for name, v in tools.items()}

    subprocess.run(["sync"], check=True)
    live = Live(vault, out, os.path.join(work, "s.sock"))
    live.wait("finished")
    _, status, usage = os.wait4(live.p.pid, 0)
    live.p.returncode = os.waitstatus_to_exitcode(status)
    hydrate_s, rss = time.monotonic() - live.t0, live.last["peak_rss_bytes"]
    hydrate_cpu = usage.ru_utime + usage.ru_stime

    copy = os.path.join(work, "cp.raw")
    subprocess.run(["rm", "-f", copy], check=True)
    subprocess.run(["sync"], check=True)
    before = os.times()
    t = time.monotonic()
    subprocess.run(["cp", "--sparse=always", images["d"], copy], check=True)
    subprocess.run(["sync", copy], check=True)
    cp_s = time.monotonic() - t
    after = os.times()
    cp_cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    assert run("cmp", copy, os.path.join(out, "d.raw")) == ""
    return p50, p99, tools, hydrate_s, hydrate_cpu, cp_s, cp_cpu, rss, size


def percentiles(ms):
    """(p50, p99) of a list of milliseconds."""
    ms = sorted(ms)
    return ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))]


def main():
    work = sys.argv[1]
    os.makedirs(work, exist_ok=True)
    for export, serving, block0 in first_byte(work):
        print(f"{export}: serving after {serving * 1e3:.0f} ms, block 0 read after {block0 * 1e3:.0f} ms")
    p50, p99, tools, hyd, hyd_cpu, cp, cp_cpu, rss, size = latency_and_throughput(
        work, arg("--data-mib", 1024), arg("--reads", 2000))
    print(f"4 KiB random reads during hydration: p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    for name, (a, b) in tools.items():
        print(f"{name} during hydration (whole command, 50 runs): p50 {a:.1f} ms, p99 {b:.1f} ms")
    print(f"hydration of {size // MiB} MiB: {hyd:.2f} s ({size / MiB / hyd:.0f} MiB/s, "
          f"{hyd_cpu:.2f} CPU s), cp --sparse=always + sync: {cp:.2f} s "
          f"({size / MiB / cp:.0f} MiB/s, {cp_cpu:.2f} CPU s)")
    print(f"peak RSS of the live failover: {rss / MiB:.1f} MiB")


if __name__ == "__main__":
    main()
