#!/usr/bin/env bash
# Per-epoch kNN top-1 of `ssl-train` against the fastssl recipe in PyTorch
# (tools/reference_torch.py), on the same packed CIFAR-10 and the same settings, one after the
# other, printed side by side. Defaults: issue 10's run (conv4 w32, 4x32 views, batch 256, pdim
# 256, λ 0.01, Adam 1e-3, 5 epochs, seed 0).
#
#   PYTHON=/path/to/venv/bin/python tools/compare-train.sh
#   EPOCHS=2 SEED=1 VIEWS=2x32:0.08-1 LAMBDA=0.02 tools/compare-train.sh
#
# By default (INIT=ours) the reference starts from the very weights ssl-train starts from, so the
# table compares the two trainers and data paths, not two draws of initial weights: one seed's
# draw moves epoch-1 kNN by more than 2 points (issue 10). INIT=own lets the reference draw its
# own (PyTorch's) weights from SEED.
#
# Needs a packed CIFAR-10 (DATA, default target/packed/cifar10):
#   tar xzf ../shared/datasets/cifar10-jpeg.tar.gz -C target/data/cifar10
#   target/release/ssl-pack write target/data/cifar10 target/packed/cifar10 --encoding raw
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DATA=${DATA:-target/packed/cifar10}
EPOCHS=${EPOCHS:-5}
SEED=${SEED:-0}
VIEWS=${VIEWS:-4x32:0.08-1}
BACKBONE=${BACKBONE:-conv4}
WIDTH=${WIDTH:-32}
PDIM=${PDIM:-256}
LAMBDA=${LAMBDA:-0.01}
BATCH=${BATCH:-256}
INIT=${INIT:-ours}
OUT=${OUT:-target/compare-train/$BACKBONE-w$WIDTH-$VIEWS-s$SEED-$INIT}

cargo build --release --quiet --bin ssl-train
rm -rf "$OUT" && mkdir -p "$OUT"
target/release/ssl-train --data "$DATA" --out "$OUT/ours" \
  --set backbone="$BACKBONE" --set width="$WIDTH" --set views="$VIEWS" --set pdim="$PDIM" \
  --set lambda="$LAMBDA" --set batch_size="$BATCH" --set epochs="$EPOCHS" --set seed="$SEED" \
  --set threads=2 >"$OUT/ours.log" 2>&1
INIT_FROM=()
if [ "$INIT" = ours ]; then
  # The run's initial weights, written without training (no batches: --dump-epochs 0).
  target/release/ssl-train --data "$DATA" --out "$OUT/init-run" \
    --set backbone="$BACKBONE" --set width="$WIDTH" --set views="$VIEWS" --set pdim="$PDIM" \
    --set lambda="$LAMBDA" --set batch_size="$BATCH" --set seed="$SEED" \
    --dump-batches "$OUT/init" --dump-epochs 0 >"$OUT/init.log" 2>&1
  INIT_FROM=(--init-from "$OUT/init/init.safetensors")
fi
"$PYTHON" tools/reference_torch.py --data "$DATA" --backbone "$BACKBONE" --width "$WIDTH" \
  --views "$VIEWS" --pdim "$PDIM" --lambda "$LAMBDA" --batch "$BATCH" --epochs "$EPOCHS" \
  --seed "$SEED" "${INIT_FROM[@]}" --out "$OUT/reference.jsonl" >"$OUT/reference.log" 2>&1

"$PYTHON" - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
ours = {r["epoch"]: r for r in map(json.loads, (out / "ours/metrics.jsonl").read_text().splitlines())
        if r.get("kind") == "epoch" and "knn_top1" in r}
ref = {r["epoch"]: r for r in map(json.loads, (out / "reference.jsonl").read_text().splitlines())}
print(f"{'epoch':>5} {'ssl-train':>10} {'reference':>10} {'diff':>6}")
for e in sorted(ref):
    a, b = 100 * ours[e]["knn_top1"], 100 * ref[e]["knn_top1"]
    print(f"{e:>5} {a:>10.1f} {b:>10.1f} {a - b:>+6.1f}")
PY
