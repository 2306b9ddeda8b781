#!/usr/bin/env bash
# Installs what replog's tests and benchmarks use, on a fresh Debian machine: qemu-utils
# (qemu-img, qemu-io), libnbd-bin (nbdinfo, nbdcopy), fio, python3 (the independent reader of
# FORMAT.md), setpriv (tests that run replog as an unprivileged user) and cargo-nextest (the
# test runner); and the object stores the remote
# tests start on loopback: s3s-fs (an S3 server over a directory, from crates.io), Azurite
# (Azure's blob emulator, from npm, with nodejs and npm from apt when missing) and moto's S3
# server (the one with S3 Object Lock, for the immutable-remote tests; from PyPI, with pip from
# apt when missing). Does nothing for what is present.
set -euo pipefail
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
need=()
command -v qemu-img >/dev/null 2>&1 && command -v qemu-io >/dev/null 2>&1 || need+=(qemu-utils)
command -v nbdinfo >/dev/null 2>&1 || need+=(libnbd-bin)
command -v fio >/dev/null 2>&1 || need+=(fio)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
if ! command -v azurite-blob >/dev/null 2>&1; then
  command -v node >/dev/null 2>&1 || need+=(nodejs)
  command -v npm >/dev/null 2>&1 || need+=(npm)
fi
python3 -c "import moto.server" >/dev/null 2>&1 || python3 -m pip --version >/dev/null 2>&1 \
  || need+=(python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo is required (https://rustup.rs)"; exit 1; }
# cargo installs into ~/.cargo/bin, which must be on PATH for the tests to find s3s-fs.
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest (a few minutes of building)"
  cargo install -q cargo-nextest --locked
fi
if ! command -v s3s-fs >/dev/null 2>&1; then
  echo "setup: installing s3s-fs (a few minutes of building)"
  # --locked keeps to the versions s3s-fs was released with; newer ones may need a newer rustc.
  cargo install -q s3s-fs@0.14.1 --features binary --locked \
    || cargo install -q s3s-fs@0.14.1 --features binary
fi
if ! command -v azurite-blob >/dev/null 2>&1; then
  echo "setup: installing azurite"
  $sudo npm install -g --silent --no-fund --no-audit azurite@3.35.0 >/dev/null
fi
if ! python3 -c "import moto.server" >/dev/null 2>&1; then
  echo "setup: installing moto[server]"
  # Debian marks its Python as externally managed; the flag is refused by older pips.
  python3 -m pip install -q 'moto[server]>=5,<6' --break-system-packages 2>/dev/null \
    || python3 -m pip install -q 'moto[server]>=5,<6'
fi
echo "setup: qemu-img $(qemu-img --version | head -1 | awk '{print $3}'), fio $(fio --version)," \
  "cargo $(cargo --version | awk '{print $2}'), s3s-fs $(s3s-fs --version | awk '{print $2}')," \
  "azurite $(azurite-blob --version), moto $(python3 -c 'import moto; print(moto.__version__)')"
