#!/usr/bin/env bash
# The CIFAR-10 recipe (configs/cifar10-cpu.toml) as one process with batch 256, as
# `ssl-train --nproc 2` with 128 per rank and as `mpirun -np 2` with 128 per rank (sync_bn on in
# all three), then the step losses side by side and the largest relative difference. Needs a
# release build with `--features mpi` and the packed CIFAR-10 (README "Set-up").
#   tools/compare-ranks.sh [STEPS]      # 30 by default; runs in target/compare-ranks/
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-30}
out=target/compare-ranks
rm -rf "$out" && mkdir -p "$out"
train=target/release/ssl-train
sets=(--config configs/cifar10-cpu.toml --set epochs=1 --set "max_steps_per_epoch=$steps"
      --set 'eval_split=""' --set sync_bn=true)
root=(); [[ $(id -u) == 0 ]] && root=(--allow-run-as-root)
$train "${sets[@]}" --set batch_size=256 --out "$out/one" > "$out/one.log" 2>&1
$train --nproc 2 "${sets[@]}" --set batch_size=128 --out "$out/nproc2" > "$out/nproc2.log" 2>&1
mpirun -np 2 --oversubscribe --bind-to none "${root[@]}" -x RAYON_NUM_THREADS=1 \
  $train "${sets[@]}" --set batch_size=128 --out "$out/mpirun2" > "$out/mpirun2.log" 2>&1
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
def losses(run):
    recs = [json.loads(l) for l in open(f"{out}/{run}/metrics.jsonl")]
    return [r["loss"] for r in recs if r["kind"] == "step"]
one, two, mpi = losses("one"), losses("nproc2"), losses("mpirun2")
print("step  1 process (256)  --nproc 2 (2x128)  mpirun -np 2 (2x128)")
for i, (a, b, c) in enumerate(zip(one, two, mpi), 1):
    print(f"{i:4d}  {a:15.6f}  {b:17.6f}  {c:20.6f}")
rel = lambda xs: max(abs(a - b) / abs(a) for a, b in zip(one, xs))
assert len(one) == len(two) == len(mpi), "runs took different numbers of steps"
print(f"largest relative difference: --nproc 2 {rel(two):.2e}, mpirun {rel(mpi):.2e}")
PY
