#!/usr/bin/env bash
# Carries finished sweep points across machines through git: the CPU sweeps take longer than one
# working session, and each session may start on a fresh machine with an empty `runs/`.
#
#   tools/sweep-carry.sh save      # runs/sweeps/<name>/ -> results/sweeps/<name>/ (finished points)
#   tools/sweep-carry.sh restore   # results/sweeps/<name>/ -> runs/sweeps/<name>/ (missing points)
#
# `save` copies a point only when it is done (summary.json and eval.json present), without its
# checkpoint (the weights stay on the machine that trained them), together with the sweep's
# sweep.toml, its CSV tables (results, curves, summary) and PNG figures. `restore` copies back
# the points that `runs/` lacks, so `ssl-sweep run` skips them and `ssl-sweep report` counts
# them. An interrupted point is never saved: it would need its checkpoint, and is retrained.
set -euo pipefail
shopt -s nullglob  # a sweep with no finished point yet has an empty runs/ folder
cd "$(dirname "$0")/.."
live=runs/sweeps
kept=results/sweeps

save() {
  for sweep in "$live"/*/; do
    [[ -f $sweep/sweep.toml ]] || continue
    name=$(basename "$sweep")
    mkdir -p "$kept/$name/runs"
    cp "$sweep"/sweep.toml "$kept/$name/"
    for f in "$sweep"/*.csv "$sweep"/*.png; do [[ -f $f ]] && cp "$f" "$kept/$name/"; done
    for point in "$sweep"/runs/*/; do
      [[ -f $point/summary.json && -f $point/eval.json ]] || continue
      dest="$kept/$name/runs/$(basename "$point")"
      rm -rf "$dest.partial" && mkdir -p "$dest.partial"
      # Not a temporary file a killed write left behind (atomic_file names them *.partial).
      find "$point" -maxdepth 1 -type f ! -name "*.partial" -exec cp {} "$dest.partial/" \;
      rm -rf "$dest" && mv "$dest.partial" "$dest"
      echo "saved $dest"
    done
  done
}

restore() {
  for sweep in "$kept"/*/; do
    [[ -f $sweep/sweep.toml ]] || continue
    name=$(basename "$sweep")
    mkdir -p "$live/$name/runs"
    [[ -f $live/$name/sweep.toml ]] || cp "$sweep/sweep.toml" "$live/$name/"
    for point in "$sweep"/runs/*/; do
      dest="$live/$name/runs/$(basename "$point")"
      [[ -f $dest/summary.json ]] && continue
      rm -rf "$dest" && cp -r "$point" "$dest"
      echo "restored $dest"
    done
  done
}

case ${1:-} in
  save) save ;;
  restore) restore ;;
  *) echo "usage: tools/sweep-carry.sh save|restore" >&2; exit 2 ;;
esac
