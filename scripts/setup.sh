#!/usr/bin/env bash
# Installs what replog's tests and benchmarks use, on a fresh Debian machine: qemu-utils
# (qemu-img, qemu-io), libnbd-bin (nbdinfo, nbdcopy) and fio. Does nothing for what is present.
set -euo pipefail
need=()
command -v qemu-img >/dev/null 2>&1 && command -v qemu-io >/dev/null 2>&1 || need+=(qemu-utils)
command -v nbdinfo >/dev/null 2>&1 || need+=(libnbd-bin)
command -v fio >/dev/null 2>&1 || need+=(fio)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo is required (https://rustup.rs)"; exit 1; }
echo "setup: qemu-img $(qemu-img --version | head -1 | awk '{print $3}'), fio $(fio --version), cargo $(cargo --version | awk '{print $2}')"
