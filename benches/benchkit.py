"""What the benchmark scripts of benches/ share: where replog is, running and timing commands,
their command lines, and printing Markdown tables.

Not a script: the scripts (`benches/NAME.py`, run as such, so this directory is first on
sys.path) `import benchkit`.

The replog binary is REPLOG=PATH when that is set (then nothing is built), else
$CARGO_TARGET_DIR/release/replog, else ROOT/target/release/replog; `build()` builds it unless
REPLOG is set.
"""
import json, os, shutil, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
REPLOG = os.environ.get("REPLOG") or os.path.join(TARGET, "release", "replog")
PEERS = os.path.join(ROOT, "..", "shared", "peers")
MiB, GiB = 1 << 20, 1 << 30


def build():
    """A release build of replog, unless REPLOG names a binary."""
    if not os.environ.get("REPLOG"):
        subprocess.run(["cargo", "build", "--release", "-q", "--bin", "replog"], cwd=ROOT, check=True)


def arg(name, default):
    """The value after `name` on the command line, of default's type; default without it."""
    a = sys.argv
    return type(default)(a[a.index(name) + 1]) if name in a else default


def run(cmd, **kw):
    """Runs cmd; returns its stdout; a failure raises with its stderr."""
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{p.stderr.strip()}")
    return p.stdout


def timed(cmd, **kw):
    """Runs cmd (as run); returns (wall seconds, its stdout)."""
    t = time.monotonic()
    out = run(cmd, **kw)
    return time.monotonic() - t, out


def remove(path):
    """Deletes a file or a tree, if there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def settle():
    """Dirty pages flushed, then a pause: on a filesystem mounted with `discard`, deletes turn
    into discards at the next journal commit, and without the sync and pause they would land in
    the middle of the next timed command."""
    os.sync()
    time.sleep(2)


def drop_caches():
    """Dirty pages flushed and the page cache dropped (needs root)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def allocated(path):
    """Bytes allocated on disk under path."""
    return int(run(["du", "-s", "--block-size=1", path]).split()[0])


def proc_io(pid, field):
    """A counter of /proc/PID/io, e.g. rchar or wchar."""
    with open(f"/proc/{pid}/io") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))


def wait_for(path, seconds=30):
    """Waits until path exists (a server's socket); exits after `seconds` without it."""
    deadline = time.time() + seconds
    while not os.path.exists(path):
        if time.time() > deadline:
            sys.exit(f"{path} never appeared")
        time.sleep(0.02)


def chain(work):
    """WORK/chain: the qcow2 chain of ../shared/peers/make_chain.py (made once)."""
    d = os.path.join(work, "chain")
    if not os.path.exists(os.path.join(d, "ov20.qcow2")):
        run([sys.executable, os.path.join(PEERS, "make_chain.py"), d])
    return d


def machine(work, load=False):
    """The `machine: ...` line: cores, kernel, (the load,) the filesystem of work."""
    load = f", load {os.getloadavg()[0]:.1f}" if load else ""
    return (f"machine: {os.cpu_count()} cores, {os.uname().release}{load}; "
            f"disk: {run(['df', '-h', work]).splitlines()[-1]}")


def begin(load=False):
    """The start of a comparison: the work directory (the first argument, made if missing)
    as an absolute path, replog built (build()), and the machine line printed."""
    work = os.path.abspath(sys.argv[1])
    os.makedirs(work, exist_ok=True)
    build()
    print(machine(work, load))
    return work


def write_out(out):
    """With --out FILE, writes out there as JSON."""
    if "--out" in sys.argv:
        with open(arg("--out", ""), "w") as f:
            json.dump(out, f, indent=1)


def med(rows, key):
    """The median of row[key] over rows."""
    return statistics.median(r[key] for r in rows)


def table(title, header, rows, level=3, align="---"):
    """A Markdown table, under a heading of `level` unless title is None."""
    if title is not None:
        print(f"\n{'#' * level} {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + f"{align}|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
