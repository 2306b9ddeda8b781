#!/usr/bin/env bash
# The long version of the reliability tests, in release mode: many more kill -9 cycles, model
# cases, crash seeds, flips and reader/writer iterations than CI runs. Prints each test's figures.
#
#   scripts/soak.sh [MULTIPLIER]     (default 10; the kill -9 test runs 200 x MULTIPLIER cycles)
set -euo pipefail
cd "$(dirname "$0")/.."
m=${1:-10}
export REPLOG_STRESS=$m
export REPLOG_MODEL_CASES=$((12 * m))
export REPLOG_KILL_CYCLES=$((200 * m))
echo "soak: multiplier $m (kill -9 cycles $REPLOG_KILL_CYCLES, model cases $REPLOG_MODEL_CASES)"
for backend in auto sync; do
  echo "== backend $backend"
  # The kill -9 test is built once per backend (`on_each_backend`); its module names it.
  cargo test --release -p replog --test on_each_backend "$backend::kill_nine" \
    -- --nocapture 2>&1 | grep -E "violations|test result|panicked|FAILED" || true
  REPLOG_IO_BACKEND=$backend cargo test --release -p replog-tests --test model \
    --test crash_points --test faults --test torn_tail --test concurrent --test end_of_log \
    -- --nocapture 2>&1 | grep -E "violations|test result|panicked|FAILED" || true
done
