#!/usr/bin/env bash
# Runs every fuzz target for TARGET_MINUTES minutes, FUZZ_JOBS of them at a time (default: one
# per processor, as each fuzzer keeps one busy), then prints a table of runs, execs/s, coverage
# and findings per target.
#
#   fuzz/run.sh 10                                  # ten minutes per target
#   FUZZ_TARGETS="record segment_scan" fuzz/run.sh 1
#   FUZZ_JOBS=1 fuzz/run.sh 1                       # one after another
#
# Needs nightly and cargo-fuzz (`cargo install cargo-fuzz --locked`). The committed seeds in
# fuzz/corpus/<target>/ are read but never written: inputs the fuzzer finds interesting go to
# fuzz/target/run-corpus/<target>/ (kept between runs), findings to fuzz/artifacts/<target>/.
# To keep a finding as a regression test, minimize it (`cargo +nightly fuzz tmin`) and copy it
# into fuzz/corpus/<target>/: `cargo test -p replog-format --test fuzz_corpus_replay` replays it.
#
# Exit status: 0 when no target found anything, 1 otherwise.
set -euo pipefail

if [[ $# -ne 1 || ! $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "usage: $0 TARGET_MINUTES" >&2
    exit 2
fi
seconds=$(awk -v m="$1" 'BEGIN { s = int(m * 60); print (s < 1 ? 1 : s) }')

cd "$(dirname "$0")/.."
targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
logs=fuzz/target/run-logs
mkdir -p "$logs"

# Every target is built once, here; each is then run as the built binary, with the flags
# `cargo fuzz run` would give it, so no target waits on a cargo invocation of its own.
cargo +nightly fuzz build >/dev/null
bin=fuzz/target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release

jobs=${FUZZ_JOBS:-$(nproc)}

# Runs target $1 for $seconds seconds; leaves its log and "STATUS FINDINGS" in $logs/$1.result.
run_target() {
    local t=$1 work=fuzz/target/run-corpus/$1 artifacts=fuzz/artifacts/$1 before after status=0
    mkdir -p "$work" "$artifacts"
    before=$(find "$artifacts" -type f | wc -l)
    echo "== $t: ${seconds}s" >&2
    "$bin/$t" -artifact_prefix="$artifacts/" -max_total_time="$seconds" -timeout=10 \
        -print_final_stats=1 "$work" "fuzz/corpus/$t" >"$logs/$t.log" 2>&1 || status=$?
    after=$(find "$artifacts" -type f | wc -l)
    echo "$status $((after - before))" >"$logs/$t.result"
}

running=0
for t in $targets; do
    if ((running >= jobs)); then
        wait -n || true
        running=$((running - 1))
    fi
    run_target "$t" &
    running=$((running + 1))
done
wait

summary=()
failed=0
for t in $targets; do
    read -r status findings <"$logs/$t.result"
    artifacts=fuzz/artifacts/$t
    runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$logs/$t.log" | tail -n 1)
    secs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$logs/$t.log" | tail -n 1)
    execs=$(grep -o 'exec/s: [0-9]*' "$logs/$t.log" | tail -n 1 | awk '{ print $2 }')
    cov=$(grep -o 'cov: [0-9]*' "$logs/$t.log" | tail -n 1 | awk '{ print $2 }')
    if [[ -n ${runs:-} && ${secs:-0} -gt 0 ]]; then
        execs=$((runs / secs))
    fi
    if [[ $status -ne 0 && $findings -eq 0 ]]; then
        findings="exit $status"
    fi
    if [[ $status -ne 0 || $findings != 0 ]]; then
        failed=1
        echo "   $t found something: see $logs/$t.log and $artifacts/" >&2
    fi
    summary+=("$(printf '%-16s %12s %10s %8s %s' "$t" "${runs:-?}" "${execs:-?}" "${cov:-?}" "$findings")")
done

printf '%-16s %12s %10s %8s %s\n' target runs execs/s cov findings
printf '%s\n' "${summary[@]}"
exit "$failed"
