#!/usr/bin/env bash
# Runs the three CPU sweeps one after another at the lowest priority, from a copy of the
# release binary (so rebuilding the crate meanwhile does not swap it under the running sweep).
# Resumable: start it again after a stop or on a new machine and finished points are skipped.
# A session's machine may be replaced with only the git working tree kept (`runs/` and
# `target/` are ignored, so they go), hence the restore before and a save every two minutes:
# each finished point reaches `results/sweeps/` (see tools/sweep-carry.sh) soon after it ends.
#
#   setsid nohup tools/sweep-background.sh > /dev/null 2>&1 &
#   SWEEPS="fraction pdim-lambda" setsid nohup tools/sweep-background.sh > /dev/null 2>&1 &
#   tail -f target/sweeprun/status          # one line per point; logs in target/sweeprun/*.log
set -euo pipefail
cd "$(dirname "$0")/.."
# Launched with setsid, this session is an autogroup of its own, and Linux shares the CPU
# equally between autogroups whatever each process's nice: a clean `.ci/run` beside the sweep
# took 38 min instead of about 10. Lowering the group's weight makes nice 19 mean background.
echo 19 2>/dev/null > /proc/self/autogroup || true
work=target/sweeprun
mkdir -p "$work"
tools/sweep-carry.sh restore > /dev/null
if [[ ! -f target/packed/cifar10/manifest.json ]]; then
  mkdir -p target/data/cifar10
  [[ -d target/data/cifar10/train ]] || tar xzf ../shared/datasets/cifar10-jpeg.tar.gz -C target/data/cifar10
  cargo build --release --quiet --bin ssl-pack
  target/release/ssl-pack write target/data/cifar10 target/packed/cifar10 --encoding raw
fi
cargo build --release --quiet --bin ssl-sweep
cp target/release/ssl-sweep "$work/ssl-sweep"
( while sleep 120; do tools/sweep-carry.sh save > /dev/null; done ) &
saver=$!
trap 'kill $saver; tools/sweep-carry.sh save > /dev/null' EXIT
for name in ${SWEEPS:-views fraction pdim-lambda}; do
  # Points another sweep already trained with the same config (fraction 1.0 is a views point)
  # are copied, not retrained.
  reuse=()
  for other in runs/sweeps/*/; do
    [[ $other == "runs/sweeps/$name/" ]] || reuse+=(--reuse "$other")
  done
  echo "$(date -u +%FT%TZ) start $name" >> "$work/status"
  nice -n 19 "$work/ssl-sweep" run "sweeps/cpu/$name.toml" "${reuse[@]}" >> "$work/$name.log" 2>&1 \
    || { echo "$(date -u +%FT%TZ) $name failed (see $work/$name.log)" >> "$work/status"; exit 1; }
  echo "$(date -u +%FT%TZ) finished $name" >> "$work/status"
done
