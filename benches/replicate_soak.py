#!/usr/bin/env python3
"""`replog replicate` under a steady guest load: the RPO it keeps, and what each point costs.

  benches/replicate_soak.py WORKDIR [--minutes 10] [--every 10s] [--size-gib 4] [--rate-mib 2]

A qcow2 disk of SIZE GiB is served by qemu-storage-daemon (node disk0, a writable NBD export,
a QMP monitor). A guest (qemu-io on the export, fed one command at a time, each acknowledged
before the next) writes random 64 KiB blocks at RATE MiB/s for MINUTES minutes, while
`replog replicate --every EVERY` cuts, journals the dirty extents and takes points. Every second
the script asks `replog replicate --status --json` for the RPO (now minus the cut of the newest
point). At the end it stops replication with SIGTERM and prints Markdown: points taken, the RPO
p50 / p99 / max over the samples, cycle seconds, and the bytes the points read against the
bytes the guest wrote (after the first, full, pass).

Needs: a release build of replog (built here unless REPLOG=PATH names one), qemu-img, qemu-io,
qemu-storage-daemon.
"""
import json, os, random, signal, statistics, subprocess, sys, threading, time

from benchkit import GiB, MiB, REPLOG, arg, build, table, wait_for

BLOCK = 64 << 10


def start_daemon(work, size):
    disk = os.path.join(work, "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, str(size)], check=True)
    nbd, qmp = os.path.join(work, "nbd.sock"), os.path.join(work, "qmp.sock")
    daemon = subprocess.Popen([
        "qemu-storage-daemon",
        "--blockdev", f"driver=file,filename={disk},node-name=file0",
        "--blockdev", "driver=qcow2,file=file0,node-name=disk0",
        "--nbd-server", f"addr.type=unix,addr.path={nbd}",
        "--export", "type=nbd,id=e0,node-name=disk0,name=disk,writable=on",
        "--chardev", f"socket,path={qmp},server=on,wait=off,id=qmp0", "--monitor", "chardev=qmp0",
    ], stdout=subprocess.DEVNULL)
    wait_for(nbd)
    wait_for(qmp)
    return daemon, nbd, qmp


class Guest(threading.Thread):
    """Random 64 KiB writes at `rate` bytes per second, one at a time, each acknowledged."""

    def __init__(self, nbd, size, rate, until):
        super().__init__(daemon=True)
        self.size, self.rate, self.until = size, rate, until
        self.written = []  # (time, bytes)
        self.io = subprocess.Popen(["qemu-io", "-f", "raw", f"nbd+unix:///disk?socket={nbd}"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def run(self):
        rng, start, sent = random.Random(7), time.time(), 0
        while time.time() < self.until:
            ahead = sent / self.rate - (time.time() - start)
            if ahead > 0:
                time.sleep(ahead)
            offset = rng.randrange(self.size // BLOCK) * BLOCK
            self.io.stdin.write(f"write -P {rng.randrange(1, 255)} {offset} {BLOCK}\n")
            self.io.stdin.flush()
            while "wrote " not in self.io.stdout.readline():
                pass
            sent += BLOCK
            self.written.append((time.time(), BLOCK))
        self.io.stdin.close()
        self.io.wait()


def status(vault):
    out = subprocess.run([REPLOG, "replicate", vault, "--status", "--json"], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else None


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    work = sys.argv[1]
    minutes, every = arg("--minutes", 10.0), arg("--every", "10s")
    size, rate = int(arg("--size-gib", 4.0) * GiB), int(arg("--rate-mib", 2.0) * MiB)
    build()
    subprocess.run(["rm", "-rf", work], check=True)
    os.makedirs(work)
    daemon, nbd, qmp = start_daemon(work, size)
    vault = os.path.join(work, "vault")
    subprocess.run([REPLOG, "init", vault], check=True, stdout=subprocess.DEVNULL)
    rep = subprocess.Popen([REPLOG, "replicate", vault, "--every", every, "--qmp", qmp,
                            "--nbd-socket", nbd, "--disk", "os=disk0", "--json"],
                           stdout=subprocess.PIPE, text=True)
    points = []
    reader = threading.Thread(target=lambda: points.extend(
        json.loads(line) for line in rep.stdout if line.startswith("{")), daemon=True)
    reader.start()
    start = time.time()
    guest = Guest(nbd, size, rate, start + minutes * 60)
    guest.start()
    rpo = []
    while guest.is_alive():
        s = status(vault)
        if s and s.get("rpo_seconds") is not None:
            rpo.append(s["rpo_seconds"])
        time.sleep(1)
    rep.send_signal(signal.SIGTERM)
    rep.wait()
    reader.join(timeout=10)
    daemon.kill()
    report(points, rpo, guest, minutes, every, size, rate)


def report(points, rpo, guest, minutes, every, size, rate):
    events = [p for p in points if p.get("event") == "point"]
    later = events[1:]  # the first is the full pass
    read = sum(p["bytes_read"] for p in later)
    written = sum(b for _, b in guest.written)
    cycle = [p["seconds"] for p in later]
    print(f"{minutes:g} minutes, `--every {every}`, a {size / GiB:g} GiB qcow2 disk on "
          f"qemu-storage-daemon, a guest writing random 64 KiB blocks at {rate / MiB:g} MiB/s "
          f"(queue depth 1, through the daemon's NBD export).\n")
    table(None, ["points", "RPO p50", "RPO p99", "RPO max", "cycle s p50", "cycle s max",
                 "bytes read by points 2..", "bytes the guest wrote", "read / written"],
          [[len(events), f"{statistics.median(rpo):.1f} s", f"{pct(rpo, 99):.1f} s", f"{max(rpo):.1f} s",
            f"{statistics.median(cycle):.2f}", f"{max(cycle):.2f}", f"{read / MiB:.1f} MiB",
            f"{written / MiB:.1f} MiB", f"{read / written:.2f}"]], align="---:")


if __name__ == "__main__":
    main()
