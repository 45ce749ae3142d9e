#!/usr/bin/env bash
# Runs the three CPU sweeps one after another at the lowest priority, from a copy of the
# release binary (so rebuilding the crate meanwhile does not swap it under the running sweep).
# Resumable: start it again after a stop or on a new machine (after `tools/sweep-carry.sh
# restore`) and finished points are skipped.
#
#   setsid nohup tools/sweep-background.sh > /dev/null 2>&1 &
#   tail -f target/sweeprun/status          # one line per point; logs in target/sweeprun/*.log
set -euo pipefail
cd "$(dirname "$0")/.."
work=target/sweeprun
mkdir -p "$work"
if [[ ! -f target/packed/cifar10/manifest.json ]]; then
  mkdir -p target/data/cifar10
  [[ -d target/data/cifar10/train ]] || tar xzf ../shared/datasets/cifar10-jpeg.tar.gz -C target/data/cifar10
  cargo build --release --quiet --bin ssl-pack
  target/release/ssl-pack write target/data/cifar10 target/packed/cifar10 --encoding raw
fi
cargo build --release --quiet --bin ssl-sweep
cp target/release/ssl-sweep "$work/ssl-sweep"
for name in ${SWEEPS:-views fraction pdim-lambda}; do
  echo "$(date -u +%FT%TZ) start $name" >> "$work/status"
  nice -n 19 "$work/ssl-sweep" run "sweeps/cpu/$name.toml" >> "$work/$name.log" 2>&1 \
    || { echo "$(date -u +%FT%TZ) $name failed (see $work/$name.log)" >> "$work/status"; exit 1; }
  echo "$(date -u +%FT%TZ) finished $name" >> "$work/status"
done
