#!/usr/bin/env bash
# Our training step (`ssl-bench step`) against the same step in PyTorch (tools/bench_step_torch.py),
# back to back on the issue's five rows, with the ratio PyTorch-time / our-time and peak RSS.
#
#   tools/compare-step.sh                 # 2 threads, 5 timed steps per row
#   THREADS=1 STEPS=3 PYTHON=/path/to/venv/bin/python tools/compare-step.sh
#   ROWS="conv4:32:256:16" tools/compare-step.sh     # backbone:width:batch:size[:stem][ ...]
#   ROWS="resnet18:64:16:224:imagenet resnet50:64:8:224:imagenet" tools/compare-step.sh
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
STEPS=${STEPS:-5}
VIEWS=${VIEWS:-2}
PYTHON=${PYTHON:-python3}
ROWS=${ROWS:-"resnet18:64:64:32 resnet18:64:256:16 resnet18:32:64:32 resnet18:16:256:32 conv4:32:256:16"}

cargo build --release --quiet --bin ssl-bench
field() { sed -n "s#.*$1=\([0-9.]*\).*#\1#p"; }

printf '%-36s %10s %10s %7s %9s %9s\n' "model(width) batch size" "ours_s" "torch_s" "ratio" "ours_MB" "torch_MB"
for row in $ROWS; do
  IFS=: read -r backbone width batch size stem <<<"$row"
  stem=${stem:-cifar}
  args=(--backbone "$backbone" --width "$width" --batch "$batch" --size "$size" --views "$VIEWS" --steps "$STEPS" --threads "$THREADS" --stem "$stem")
  ours=$(target/release/ssl-bench step "${args[@]}")
  torch=$("$PYTHON" tools/bench_step_torch.py "${args[@]}")
  o=$(field sec/step <<<"$ours"); t=$(field sec/step <<<"$torch")
  om=$(field peak_rss_mb <<<"$ours"); tm=$(field peak_rss_mb <<<"$torch")
  printf '%-36s %10.3f %10.3f %7.2f %9.0f %9.0f\n' "$backbone($width) $stem $batch ${size}px" "$o" "$t" \
    "$(awk "BEGIN{print $t/$o}")" "$om" "$tm"
done
