#!/usr/bin/env bash
# The bad-input fuzz harness (tests/fuzz.rs) for as long as asked, in release mode: mutated
# JPEG/PNG files, Parquet and Arrow shards, manifests and checkpoint state through the readers
# that use them. It prints the cases run per target and the panics, hangs and other failures
# (all must be 0); a failing input is saved under target/fuzz-crashers/<target>/.
#
#   tools/fuzz.sh --minutes 30 [--seed 7]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=1
seed=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --minutes) minutes=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    *) echo "usage: tools/fuzz.sh [--minutes N] [--seed S]" >&2; exit 2 ;;
  esac
done
FUZZ_SECONDS=$((minutes * 60)) FUZZ_SEED=$seed \
  cargo test --release --test fuzz -- --nocapture 2>&1 | grep -E "^fuzz:|panicked|FAILED|test result|case"
