#!/usr/bin/env python3
"""Object storage: upload (`replog sync`) and failover from the bucket, against the local path,
on the same vault and the same disk, in one run.

  benches/remote_compare.py --dir WORKDIR [--runs 3] [--replog PATH] [--size-gib 2]
                            [--rounds 4] [--change-pct 8] [--parallel 4,8,16] [--json FILE]
                            [--rebuild] [--keep-vault] [--no-drop-caches]

Servers: s3s-fs (its root directory is WORKDIR/s3, on the vault's filesystem) and Azurite (blob
service, in memory), both on loopback ports picked at random, as scripts/remote_smoke.sh starts
them; both are stopped when the script exits, also on an error or SIGTERM, and everything the
script made under WORKDIR is removed (the servers' logs stay when something failed).

The vault (built under WORKDIR; with --keep-vault it is left there at the end and reused while
its parameters match, and --rebuild forces a new one) is made with the CLI: `init --compression lz4`, `disk add os --from os.raw` where os.raw is
--size-gib GiB, the first half random data and the second half a hole, then --rounds rounds of
writing random data over --change-pct % of the disk (4 KiB to 1 MiB pieces at random 4 KiB
aligned offsets all over it, holes included) followed by `ingest` and `point`. It is sealed
once by a `sync --seal` to a scratch bucket, whose state (`VAULT/remote/`) is then removed again,
so every run's copy is a vault that has never synced and whose newest point is in a sealed
segment. The newest point, failed over locally, is compared with os.raw (`cmp`).

Then, --runs times, each step interleaved (cp, s3, az; local, s3, az; ...), with medians:

- Upload: `cp --sparse=always` of the vault's sealed files (base images, sealed segments,
  checkpoint indexes: what sync uploads) into a directory on the same disk, then `sync` of the
  copies: the physical limit of the local path. Against it, `replog sync COPY --json` of a fresh
  copy of the vault (`remote add COPY s3://runN/v` or `az://runN/v`, a new bucket each run).
  MB/s is bytes of data over wall seconds: for cp the bytes allocated by the copies, for sync its
  `bytes_written` (non-zero 4 MiB chunks written; each is also read back and compared).
- Failover: `replog failover VAULT --latest --out DIR --force --json` from the local vault against
  the same command from the bucket the run just uploaded (`s3://runN/v`, `az://runN/v`), which
  never reads the local vault. The images from the bucket are compared with the local ones
  (`cmp`) every run; any difference stops the script.
- `--parallel` sweep of the failover from both buckets (the default, 8, is the run above).

Besides wall time and peak RSS (replog's `peak_rss_bytes`; cp's from /usr/bin/time), each timed
command records its own CPU time and, for each server, the CPU time it used and the bytes it
wrote to sockets and files meanwhile (/proc/PID/stat and io). During a failover that is what the
server served: compared with the bytes uploaded it shows how often chunks were fetched again.

As root, every timed command starts with cold caches (`sync; echo 3 > /proc/sys/vm/drop_caches`),
so local reads come from the disk, as do s3s-fs's (Azurite keeps its blobs in process memory);
without root, or with --no-drop-caches, caches are warm and the tables say so. Dirty pages are
flushed and deleted trees followed by a 2 s pause before each timed command (the disk may be
mounted with `discard`). Results print as Markdown tables (the body of BENCHMARKS.md) and, with
--json, are also written as JSON.

Needs: a release build of replog (`cargo build --release --bin replog`; --replog PATH, or else
REPLOG=PATH, to use another binary), s3s-fs and azurite-blob on PATH (scripts/setup.sh installs
both), /usr/bin/time.
"""
import argparse, base64, functools, hashlib, hmac, http.client, json, os, random, resource, signal
import socket, statistics, subprocess, sys, time
from email.utils import formatdate

import benchkit
from benchkit import GiB, MiB, allocated, drop_caches, med, proc_io, remove, settle

# Azurite's well-known development account.
AZ_ACCOUNT = "devstoreaccount1"
AZ_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
S3_KEY, S3_SECRET = "bench", "bench-secret"

REPLOG = None        # set in main
ENV = dict(os.environ)
DROP_CACHES = False  # set in main


# benchkit.run with the servers' variables.
run = functools.partial(benchkit.run, env=ENV)


def replog(*args):
    return run([REPLOG] + [str(a) for a in args])


def replog_json(*args):
    return json.loads(replog(*args, "--json"))


def timed(cmd, servers=None):
    """settle() (and as root drop_caches()), then runs cmd; returns (stdout, {wall_s, cpu_s: of
    cmd, and per server: cpu_s and written_bytes, what it wrote to its sockets and files
    meanwhile})."""
    settle()
    if DROP_CACHES:
        drop_caches()
    before = servers.usage() if servers else {}
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    out = run(cmd)
    m = {"wall_s": time.monotonic() - t}
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    m["cpu_s"] = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    for name, (cpu, wchar) in (servers.usage() if servers else {}).items():
        m[name] = {"cpu_s": cpu - before[name][0], "written_bytes": wchar - before[name][1]}
    return out, m


# --- servers ---------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, name, log):
    for _ in range(400):
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited {proc.returncode}; see {log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} ({name}); see {log}")


def az_container(port, method, name):
    """Creates (PUT) or deletes (DELETE) an Azurite container with a SharedKey-signed request."""
    version, date = "2023-11-03", formatdate(usegmt=True)
    path = f"/{AZ_ACCOUNT}/{name}"
    to_sign = (method + "\n" * 12 + f"x-ms-date:{date}\nx-ms-version:{version}\n"
               f"/{AZ_ACCOUNT}{path}\nrestype:container")
    sig = base64.b64encode(hmac.new(base64.b64decode(AZ_KEY), to_sign.encode(), hashlib.sha256).digest())
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path + "?restype=container", headers={
        "x-ms-date": date, "x-ms-version": version, "Content-Length": "0",
        "Authorization": f"SharedKey {AZ_ACCOUNT}:{sig.decode()}"})
    r = c.getresponse()
    body = r.read()
    if r.status != (201 if method == "PUT" else 202):
        raise RuntimeError(f"Azurite: {method} container {name}: {r.status} {body!r}")


class Servers:
    """s3s-fs over WORK/s3 and Azurite in memory, on loopback; stop() kills both (their process
    groups, which this script created)."""

    def __init__(self, work):
        self.work, self.procs = work, []
        self.s3_root = os.path.join(work, "s3")
        self.s3_port, self.az_port = free_port(), free_port()

    def _start(self, name, cmd, cwd):
        log = os.path.join(self.work, f"{name}.log")
        with open(log, "w") as f:
            p = subprocess.Popen(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p, log

    def start(self):
        remove(self.s3_root)
        os.makedirs(self.s3_root)
        az_dir = os.path.join(self.work, "azurite")
        remove(az_dir)
        os.makedirs(az_dir)
        s3, s3_log = self._start("s3s-fs", ["s3s-fs", "--host", "127.0.0.1", "--port", str(self.s3_port),
                                            "--access-key", S3_KEY, "--secret-key", S3_SECRET, self.s3_root],
                                 self.work)
        az, az_log = self._start("azurite", ["azurite-blob", "--inMemoryPersistence", "--disableTelemetry",
                                             "--skipApiVersionCheck", "--blobHost", "127.0.0.1",
                                             "--blobPort", str(self.az_port)], az_dir)
        wait_port(self.s3_port, s3, "s3s-fs", s3_log)
        wait_port(self.az_port, az, "azurite-blob", az_log)
        ENV.update({
            "AWS_ENDPOINT": f"http://127.0.0.1:{self.s3_port}", "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true",
            "AZURE_STORAGE_ACCOUNT_NAME": AZ_ACCOUNT, "AZURE_STORAGE_ACCOUNT_KEY": AZ_KEY,
            "AZURE_STORAGE_ENDPOINT": f"http://127.0.0.1:{self.az_port}/{AZ_ACCOUNT}", "AZURE_ALLOW_HTTP": "true",
        })

    def bucket(self, name):
        """A new bucket (s3s-fs: a directory of its root) and container of that name."""
        os.makedirs(os.path.join(self.s3_root, name))
        az_container(self.az_port, "PUT", name)

    def drop_bucket(self, name):
        remove(os.path.join(self.s3_root, name))
        az_container(self.az_port, "DELETE", name)

    def usage(self):
        """{server: (CPU seconds so far, bytes written so far: to sockets, and for s3s-fs to
        files)}, from /proc."""
        out, tick = {}, os.sysconf("SC_CLK_TCK")
        for name, p in zip(("s3s-fs", "azurite"), self.procs):
            stat = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
            wchar = proc_io(p.pid, "wchar")
            out[name] = ((int(stat[11]) + int(stat[12])) / tick, wchar)
        return out

    def rss(self):
        """Resident bytes of each server (with its children)."""
        out = {}
        for name, p in zip(("s3s-fs", "azurite"), self.procs):
            ps = subprocess.run(["ps", "-o", "rss=", "--ppid", str(p.pid), "-p", str(p.pid)],
                                capture_output=True, text=True).stdout
            out[name] = sum(int(x) for x in ps.split()) * 1024
        return out

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = []


# --- the vault -------------------------------------------------------------------------------

def change(img, size, pct, rng):
    """Writes random data over pct % of the image, in 4 KiB..1 MiB pieces at random offsets."""
    todo = size * pct // 100
    with open(img, "r+b") as f:
        while todo > 0:
            n = min(todo, rng.randrange(1, 257) * 4096)
            off = rng.randrange(0, (size - n) // 4096 + 1) * 4096
            f.seek(off)
            f.write(os.urandom(n))
            todo -= n


def build_vault(work, servers, a):
    """The master vault (see the module documentation); reused when its parameters match."""
    v = os.path.join(work, "vault")
    stamp = os.path.join(work, "vault.json")
    params = {"size_gib": a.size_gib, "rounds": a.rounds, "change_pct": a.change_pct}
    if not a.rebuild and os.path.exists(stamp) and json.load(open(stamp)).get("params") == params:
        return v, json.load(open(stamp))
    remove(v)
    remove(stamp)
    size = int(a.size_gib * GiB)
    img = os.path.join(work, "os.raw")
    remove(img)
    t = time.monotonic()
    with open(img, "wb") as f:
        f.truncate(size)
        for _ in range(size // 2 // (4 * MiB)):
            f.write(os.urandom(4 * MiB))
    replog("init", v, "--compression", "lz4")
    replog("disk", "add", v, "os", "--from", img)
    replog("point", v, "--label", "base")
    rng = random.Random(20261202)
    ingests = []
    for r in range(1, a.rounds + 1):
        change(img, size, a.change_pct, rng)
        ingests.append(replog_json("ingest", v, "os", "--from", img))
        replog("point", v, "--label", f"round{r}")
    # Seal the open segment (only sync does that), then forget the scratch remote.
    servers.bucket("seal")
    replog("remote", "add", v, "s3://seal/v")
    replog("sync", v, "--seal")
    remove(os.path.join(v, "remote"))
    servers.drop_bucket("seal")
    built_s = time.monotonic() - t
    out = os.path.join(work, "check")
    remove(out)
    replog("failover", v, "--latest", "--out", out, "--no-sync")
    run(["cmp", img, os.path.join(out, "os.raw")])
    remove(out)
    remove(img)
    info = {"params": params, "size_bytes": size, "built_s": built_s,
            "bytes_changed": sum(i["bytes_changed"] for i in ingests),
            "bytes_stored": sum(i["bytes_stored"] for i in ingests),
            "points": len(json.loads(replog("points", v, "--json")))}
    json.dump(info, open(stamp, "w"), indent=1)
    print(f"built the vault in {built_s:.0f} s; its newest point failed over locally equals os.raw")
    return v, info


def sealed_files(v):
    """What sync uploads: base images, checkpoint indexes, and every journal segment but the
    open (highest-numbered) one."""
    def ls(d, suffix=""):
        p = os.path.join(v, d)
        return sorted(os.path.join(p, n) for n in os.listdir(p) if n.endswith(suffix)) if os.path.isdir(p) else []
    return ls("bases") + ls("index") + ls("journal", ".seg")[:-1]


# --- the contenders --------------------------------------------------------------------------

def cp_files(work, files):
    """The physical limit: the sealed files copied (sparse) to the same disk and synced."""
    dst = os.path.join(work, "cp-out")
    remove(dst)
    os.makedirs(dst)
    copies = [os.path.join(dst, f"{i}-{os.path.basename(f)}") for i, f in enumerate(files)]
    script = " && ".join(f"cp --sparse=always '{s}' '{d}'" for s, d in zip(files, copies))
    script += " && sync " + " ".join(f"'{d}'" for d in copies)
    rss = os.path.join(work, "cp.rss")
    _, m = timed(["/usr/bin/time", "-o", rss, "-f", "%M", "sh", "-c", script])
    m["bytes"] = allocated(dst)
    m["mb_per_s"] = m["bytes"] / 1e6 / m["wall_s"]
    m["peak_rss_bytes"] = int(open(rss).read().split()[-1]) * 1024
    remove(dst)
    remove(rss)
    return m


def upload(work, servers, master, url):
    """`replog sync --json` of a fresh copy of the vault to url (a new, empty prefix)."""
    v = os.path.join(work, "sync-vault")
    remove(v)
    run(["cp", "-a", master, v])
    replog("remote", "add", v, url)
    out, m = timed([REPLOG, "sync", v, "--json"], servers)
    remove(v)
    m.update(json.loads(out))
    m["wall_mb_per_s"] = m["bytes_written"] / 1e6 / m["wall_s"]
    return m


def failover(work, servers, src, name, *extra):
    """`replog failover SRC --latest --force --json` into WORK/out-NAME (left for the caller)."""
    out = os.path.join(work, f"out-{name}")
    remove(out)
    o, m = timed([REPLOG, "failover", src, "--latest", "--out", out, "--force", "--json"] + list(extra), servers)
    m.update(json.loads(o))
    m["out"] = out
    return m


def same_images(a, b):
    """Fails loudly unless the images of two failovers are byte-identical."""
    names = sorted(os.listdir(a["out"]))
    if names != sorted(os.listdir(b["out"])) or not names:
        raise RuntimeError(f"failover outputs differ in their files: {a['out']} {b['out']}")
    for n in names:
        p = subprocess.run(["cmp", os.path.join(a["out"], n), os.path.join(b["out"], n)], capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"IMAGES DIFFER: {b['out']}/{n} against {a['out']}/{n}: {p.stdout}{p.stderr}")


def cleanup(work, servers, keep_vault, ok):
    """Removes what the script made under work: the buckets, outputs and copies; the vault unless
    keep_vault; the servers' logs unless something failed."""
    doomed = [servers.s3_root, os.path.join(work, "azurite"), os.path.join(work, "cp-out"),
              os.path.join(work, "sync-vault"), os.path.join(work, "check"), os.path.join(work, "os.raw"),
              os.path.join(work, "cp.rss")]
    doomed += [os.path.join(work, n) for n in os.listdir(work) if n.startswith("out-")]
    if not keep_vault:
        doomed += [os.path.join(work, "vault"), os.path.join(work, "vault.json")]
    if ok:
        doomed += [os.path.join(work, n) for n in ("s3s-fs.log", "azurite.log")]
    else:
        print(f"servers' logs: {work}/s3s-fs.log, {work}/azurite.log", file=sys.stderr)
    for d in doomed:
        remove(d)
    if not os.listdir(work):
        os.rmdir(work)


# --- tables ----------------------------------------------------------------------------------

# The tables sit under the #### headings of BENCHMARKS.md's object storage section.
table = functools.partial(benchkit.table, level=4)


def mib(b):
    return f"{b / MiB:.0f}"


def main():
    global REPLOG, DROP_CACHES
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="work directory (the vault, s3s-fs's root, outputs)")
    ap.add_argument("--runs", type=int, default=3, help="interleaved runs; medians are reported")
    ap.add_argument("--replog", default=benchkit.REPLOG)
    ap.add_argument("--size-gib", type=float, default=2, help="disk size (half random data, half hole)")
    ap.add_argument("--rounds", type=int, default=4, help="ingest + point rounds after the base")
    ap.add_argument("--change-pct", type=int, default=8, help="percent of the disk written per round")
    ap.add_argument("--parallel", default="4,8,16", help="--parallel values of the remote failover sweep")
    ap.add_argument("--json", metavar="FILE", help="also write every measurement as JSON")
    ap.add_argument("--rebuild", action="store_true", help="build the vault even if one matches")
    ap.add_argument("--keep-vault", action="store_true", help="leave the vault in WORKDIR for the next run")
    ap.add_argument("--no-drop-caches", action="store_true", help="keep the page cache warm")
    a = ap.parse_args()
    REPLOG = os.path.abspath(a.replog)
    DROP_CACHES = os.geteuid() == 0 and not a.no_drop_caches
    work = os.path.abspath(a.dir)
    os.makedirs(work, exist_ok=True)
    sweep = [int(x) for x in a.parallel.split(",")]
    started = time.monotonic()

    servers, ok = Servers(work), False
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        servers.start()
        versions = {"s3s-fs": run(["s3s-fs", "--version"]).strip(),
                    "azurite": "azurite-blob " + run(["azurite-blob", "--version"]).strip(),
                    "replog": replog("--version").strip()}
        master, info = build_vault(work, servers, a)
        files = sealed_files(master)
        file_bytes = sum(os.path.getsize(f) for f in files)
        inspect = replog_json("inspect", master)
        print(f"machine: {os.cpu_count()} cores, {os.uname().release}, load {os.getloadavg()[0]:.1f}; "
              f"disk: {run(['df', '-h', work]).splitlines()[-1]}")
        print(f"servers: {versions['s3s-fs']} (root {servers.s3_root}), {versions['azurite']} (in memory)")
        print(f"vault: {info['size_bytes'] / GiB:g} GiB disk, {info['points']} points, "
              f"{info['bytes_changed'] / MiB:.0f} MiB changed in {a.rounds} rounds; {len(files)} sealed files, "
              f"{file_bytes / MiB:.0f} MiB ({allocated(master) / MiB:.0f} MiB allocated in the vault)")
        print("caches: " + ("dropped before every timed command" if DROP_CACHES else "warm"))

        up = {"cp": [], "s3": [], "az": []}
        fo = {"local": [], "s3": [], "az": []}
        # --parallel 8 is the default: the sweep takes those runs from the failover above.
        par = {(k, p): fo[k] if p == 8 else [] for p in sweep for k in ("s3", "az")}
        for r in range(1, a.runs + 1):
            bucket = f"run{r}"
            servers.bucket(bucket)
            up["cp"].append(cp_files(work, files))
            for k in ("s3", "az"):
                up[k].append(upload(work, servers, master, f"{k}://{bucket}/v"))
            fo["local"].append(failover(work, servers, master, "local"))
            for k in ("s3", "az"):
                fo[k].append(failover(work, servers, f"{k}://{bucket}/v", k))
                same_images(fo["local"][-1], fo[k][-1])
                remove(fo[k][-1]["out"])
            remove(fo["local"][-1]["out"])
            for p in sweep:
                for k in ("s3", "az"):
                    if p != 8:
                        par[(k, p)].append(failover(work, servers, f"{k}://{bucket}/v", f"{k}-p{p}", "--parallel", str(p)))
                        remove(par[(k, p)][-1]["out"])
            server_rss = servers.rss()
            servers.drop_bucket(bucket)
            print(f"run {r}: images from s3:// and az:// identical to the local failover's (cmp); "
                  f"{time.monotonic() - started:.0f} s so far", flush=True)
        ok = True
    finally:
        servers.stop()
        cleanup(work, servers, a.keep_vault, ok)
    total_s = time.monotonic() - started

    n = a.runs
    caches = "caches dropped before each command" if DROP_CACHES else "caches warm"
    srv = {"s3": "s3s-fs", "az": "azurite"}

    def served(rows, k):
        return statistics.median(x[srv[k]]["written_bytes"] for x in rows)

    def server_cpu(rows, k):
        return f"{statistics.median(x[srv[k]]['cpu_s'] for x in rows):.1f}"

    def rss(rows):
        return mib(max(x["peak_rss_bytes"] for x in rows))

    print("\n```sh\n" + " ".join(["benches/remote_compare.py"] + sys.argv[1:]) + "\n```")
    cp_mbps = med(up["cp"], "mb_per_s")
    rows = [["`cp --sparse=always` + `sync`", mib(med(up["cp"], "bytes")), f"{med(up['cp'], 'wall_s'):.2f}",
             f"{cp_mbps:.0f}", "1.00x", f"{med(up['cp'], 'cpu_s'):.1f}", "", rss(up["cp"])]]
    for k, label in (("s3", "`replog sync` to s3s-fs"), ("az", "`replog sync` to Azurite")):
        rows.append([label, mib(med(up[k], "bytes_written")), f"{med(up[k], 'wall_s'):.2f}",
                     f"{med(up[k], 'wall_mb_per_s'):.0f}", f"{med(up[k], 'wall_mb_per_s') / cp_mbps:.2f}x",
                     f"{med(up[k], 'cpu_s'):.1f}", server_cpu(up[k], k), rss(up[k])])
    table(f"Upload of the vault's sealed files ({len(files)} files, {file_bytes / MiB:.0f} MiB, "
          f"median of {n}, interleaved, {caches})",
          ["contender", "MiB of data", "s", "MB/s", "vs cp", "client CPU s", "server CPU s", "peak RSS MiB"], rows)
    print(f"\n(replog's own `mb_per_s`, timed inside the process: s3s-fs {med(up['s3'], 'mb_per_s'):.0f}, "
          f"Azurite {med(up['az'], 'mb_per_s'):.0f}; {up['s3'][0]['chunks_written']} chunks written, "
          f"{up['s3'][0]['zero_chunks']} all-zero chunks skipped)")

    data = med(up["s3"], "bytes_written")
    loc = med(fo["local"], "wall_s")
    rows = [["local vault", f"{loc:.2f}", "1.00x", f"{med(fo['local'], 'cpu_s'):.1f}", "", "", rss(fo["local"])]]
    for k, label in (("s3", "s3:// (s3s-fs)"), ("az", "az:// (Azurite)")):
        rows.append([label, f"{med(fo[k], 'wall_s'):.2f}", f"{med(fo[k], 'wall_s') / loc:.2f}x",
                     f"{med(fo[k], 'cpu_s'):.1f}", server_cpu(fo[k], k),
                     f"{mib(served(fo[k], k))} ({served(fo[k], k) / data:.2f}x)", rss(fo[k])])
    table(f"`replog failover --latest --force` of the {info['size_bytes'] / GiB:g} GiB disk "
          f"({mib(med(fo['local'], 'bytes_written'))} MiB written; median of {n}, interleaved, {caches}; "
          f"--parallel 8 from a bucket)",
          ["from", "s", "vs local", "client CPU s", "server CPU s", "MiB served (x uploaded)", "peak RSS MiB"], rows)

    rows = []
    for p in sweep:
        row = [str(p)]
        for k in ("s3", "az"):
            x = par[(k, p)]
            row += [f"{med(x, 'wall_s'):.2f}", f"{med(x, 'wall_s') / loc:.2f}x",
                    f"{served(x, k) / data:.2f}x", rss(x)]
        rows.append(row)
    table(f"Failover from the bucket by `--parallel` (median of {n}, interleaved)",
          ["--parallel", "s3:// s", "vs local", "served / uploaded", "peak RSS MiB",
           "az:// s", "vs local", "served / uploaded", "peak RSS MiB"], rows)
    print(f"\nserver memory at the end of the last run: s3s-fs {mib(server_rss['s3s-fs'])} MiB, "
          f"Azurite {mib(server_rss['azurite'])} MiB; the script took {total_s:.0f} s")

    if a.json:
        with open(a.json, "w") as f:
            json.dump({"versions": versions, "vault": info, "inspect": inspect, "sealed_file_bytes": file_bytes,
                       "drop_caches": DROP_CACHES, "upload": up, "failover": fo,
                       "parallel": {f"{k}-{p}": v for (k, p), v in par.items()},
                       "server_rss_bytes": server_rss, "total_s": total_s}, f, indent=1)


if __name__ == "__main__":
    main()
