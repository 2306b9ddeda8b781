#!/usr/bin/env bash
# Starts s3s-fs and Azurite on loopback and runs the replog binary against both, the way an
# operator would: the demo vault, `remote add`, `sync --seal` with a cache limit that evicts
# everything, then `failover` from the bucket with the local vault deleted, compared byte for
# byte with a failover made before. Exits non-zero on any difference.
#
#   scripts/remote_smoke.sh [path/to/replog]     (default: target/release/replog, built if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
replog=${1:-target/release/replog}
[ -x "$replog" ] || cargo build --release --quiet --bin replog
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "remote smoke: nothing listens on port $1" >&2
  return 1
}

# s3s-fs: the bucket is a directory of its root.
s3_port=$(free_port)
mkdir -p "$work/s3/replog"
s3s-fs --host 127.0.0.1 --port "$s3_port" --access-key smoke --secret-key smoke-secret "$work/s3" \
  >"$work/s3s-fs.log" 2>&1 &
pids+=($!)
# Azurite, in memory; its container is created with a SharedKey-signed request.
az_port=$(free_port)
(cd "$work" && exec azurite-blob --inMemoryPersistence --disableTelemetry --skipApiVersionCheck \
  --blobHost 127.0.0.1 --blobPort "$az_port" >"$work/azurite.log" 2>&1) &
pids+=($!)
wait_port "$s3_port"
wait_port "$az_port"
az_key='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
python3 - "$az_port" "$az_key" <<'PY'
import base64, hashlib, hmac, http.client, sys
from email.utils import formatdate
port, key = int(sys.argv[1]), sys.argv[2]
account, version = "devstoreaccount1", "2023-11-03"
date = formatdate(usegmt=True)
path = f"/{account}/replog"
to_sign = ("PUT" + "\n" * 12 + f"x-ms-date:{date}\nx-ms-version:{version}\n"
           f"/{account}{path}\nrestype:container")
sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest())
c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
c.request("PUT", path + "?restype=container", headers={
    "x-ms-date": date, "x-ms-version": version, "Content-Length": "0",
    "Authorization": f"SharedKey {account}:{sig.decode()}"})
r = c.getresponse()
if r.status != 201:
    sys.exit(f"remote smoke: Azurite did not create the container: {r.status} {r.read()!r}")
PY

"$replog" demo "$work/demo" >/dev/null
for remote in s3 az; do
  vault="$work/$remote-vault"
  cp -a "$work/demo/vault" "$vault"
  if [ "$remote" = s3 ]; then
    export AWS_ENDPOINT="http://127.0.0.1:$s3_port" AWS_ACCESS_KEY_ID=smoke \
      AWS_SECRET_ACCESS_KEY=smoke-secret AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
    url=s3://replog/smoke
  else
    export AZURE_STORAGE_ACCOUNT_NAME=devstoreaccount1 AZURE_STORAGE_ACCOUNT_KEY="$az_key" \
      AZURE_STORAGE_ENDPOINT="http://127.0.0.1:$az_port/devstoreaccount1" AZURE_ALLOW_HTTP=true
    url=az://replog/smoke
  fi
  "$replog" remote add "$vault" "$url" --cache-limit 1
  "$replog" sync "$vault" --seal
  "$replog" failover "$vault" --latest --out "$work/$remote-local" --no-sync >/dev/null
  rm -rf "$vault"
  "$replog" points "$url"
  "$replog" failover "$url" --latest --out "$work/$remote-remote" >/dev/null
  for img in "$work/$remote-local"/*.raw; do
    cmp "$img" "$work/$remote-remote/$(basename "$img")"
  done
  echo "remote smoke: $url: failover from the bucket matches the local vault's"
done
