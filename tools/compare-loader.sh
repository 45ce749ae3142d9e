#!/usr/bin/env bash
# Our K-view loader (`ssl-bench loader`) against a torchvision DataLoader doing the same work
# (tools/loader_torch.py: same packed dataset, same views, same augmentations, u8 batches out),
# back to back per row, with images/s of each and the ratio ours / torchvision.
#
#   tools/compare-loader.sh                          # CIFAR-10 packed, 2 threads, 100 batches per row
#   THREADS=1 BATCHES=50 PYTHON=/path/to/venv/bin/python tools/compare-loader.sh
#   DATA=target/packed/photos BATCH=32 ROWS="2x224@ffcv 2x224@full" CACHE=stream tools/compare-loader.sh
#   ROWS="2x32:0.14-1,6x16:0.05-0.14@ffcv" tools/compare-loader.sh   # views@augment[ ...]
#
# A row is `VIEWS@AUGMENT`: VIEWS as `ssl-bench loader --views` takes it (`NxS[:lo-hi]`, groups
# separated by commas), AUGMENT one of full (crop, flip, jitter p 0.8, grayscale p 0.2), ffcv (the
# same without grayscale) or crop (crop and flip). THREADS is our worker threads and the
# DataLoader's num_workers. CACHE (auto|decoded|stream) goes to both: `stream` decodes JPEG/PNG
# per sample on both sides. INTERP is our crop's resize: `bilinear` by default, because
# torchvision's RandomResizedCrop has only that (antialiased); `area` times our default
# (OpenCV's INTER_AREA, FFCV's), with torchvision still bilinear. NO_BUILD=1 skips `cargo build`.
#
# FFCV is not measured: it needs its own .beton files and the FFCV-SSL fork's ColorJitter and
# RandomGrayscale, and an FFCV path that was never run here would be untested code. The script
# only says whether `import ffcv` works. The table's numbers depend on the machine's load: run
# it on an idle machine, or read the ratio, which compares the two loaders back to back.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-2}
BATCHES=${BATCHES:-100}
BATCH=${BATCH:-256}
SPLIT=${SPLIT:-train}
CACHE=${CACHE:-auto}
INTERP=${INTERP:-bilinear}
PYTHON=${PYTHON:-python3}
DATA=${DATA:-target/packed/cifar10}
ROWS=${ROWS:-"2x32@ffcv 4x32@ffcv 2x32:0.14-1,6x16:0.05-0.14@ffcv 2x32@full 2x32@crop"}

[[ ${NO_BUILD:-0} == 1 ]] || cargo build --release --quiet --bin ssl-bench
[[ -f "$DATA/manifest.json" ]] || { echo "$DATA: not a packed dataset (run ssl-pack write first)" >&2; exit 1; }
field() { grep -m1 "^$1 " | sed -n "s#.*$2=\([0-9.]*\).*#\1#p"; }

echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "data: $DATA ($SPLIT), batch $BATCH, $BATCHES timed batches, threads/workers $THREADS, cache $CACHE, our resize $INTERP"
echo "torch: $("$PYTHON" -c 'import torch, torchvision; print(torch.__version__, "torchvision", torchvision.__version__)')"
if "$PYTHON" -c "import ffcv" 2>/dev/null; then
  echo "ffcv: installed, not measured (this script has no FFCV path; see its header)"
else
  echo "ffcv: not installed, skipped"
fi
printf '%-40s %3s %12s %12s %7s\n' "views@augment" "K" "ours_img/s" "torch_img/s" "ratio"
for row in $ROWS; do
  views=${row%@*}; augment=${row##*@}
  [[ $row == *@* ]] || augment=full
  common=(--data "$DATA" --split "$SPLIT" --views "$views" --batch "$BATCH" --threads "$THREADS"
          --batches "$BATCHES" --augment "$augment" --cache "$CACHE")
  ours=$(target/release/ssl-bench loader "${common[@]}" --interpolation "$INTERP" --baseline-batches 1)
  torch=$("$PYTHON" tools/loader_torch.py "${common[@]}")
  o=$(field loader images/s <<<"$ours"); t=$(field torchvision images/s <<<"$torch")
  k=$(tr ',' '\n' <<<"$views" | awk -Fx '{k += $1} END {print k}')
  printf '%-40s %3.0f %12.0f %12.0f %7.1f\n' "$row" "$k" "$o" "$t" "$(awk "BEGIN{print $o/$t}")"
done
