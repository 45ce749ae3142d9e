#!/usr/bin/env python3
"""Checks an `ssl-pack export --to hf` directory with the libraries its users load it with.

    pip install datasets pandas pillow
    python tools/check_hf_export.py OUT [--manifest DIR/manifest.json]

Loads OUT with `datasets.load_dataset("parquet", data_dir=OUT)` and `load_dataset(OUT)` (splits
found by file name alone), checks the restored features (Image, ClassLabel names, int64 index),
that rows decode to PIL images of the stored size, and that `pandas.read_parquet(OUT/data)` reads
the folder as one table. With --manifest, rows per split and class names must match the packed
dataset the export came from. Exits 1 on the first mismatch; tests/hf_datasets.rs runs it.
"""

import argparse
import io
import json
import pathlib
import sys
import tempfile


def fail(message):
    print(f"check_hf_export: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--manifest", type=pathlib.Path)
    args = parser.parse_args()

    import datasets
    import pandas
    import PIL.Image
    import pyarrow.parquet as pq

    data = args.out / "data"
    manifest = json.loads(args.manifest.read_text()) if args.manifest else None
    # A throwaway cache: load_dataset converts to Arrow under it, which must not outlive the check.
    with tempfile.TemporaryDirectory() as cache:
        by_dir = datasets.load_dataset("parquet", data_dir=str(args.out), cache_dir=cache)
        by_path = datasets.load_dataset(str(args.out), cache_dir=cache)
        for name, ds in [("load_dataset('parquet', data_dir=OUT)", by_dir), ("load_dataset(OUT)", by_path)]:
            print(f"{name}: " + ", ".join(f"{s} {len(ds[s])} rows" for s in ds))
        if {s: len(by_dir[s]) for s in by_dir} != {s: len(by_path[s]) for s in by_path}:
            fail("the two ways of loading disagree on splits or rows")
        if manifest:
            want = {s: info["rows"] for s, info in manifest["splits"].items()}
            got = {s: len(by_dir[s]) for s in by_dir}
            if got != want:
                fail(f"rows per split {got}, manifest says {want}")
        for split, ds in by_dir.items():
            features = ds.features
            if not isinstance(features["image"], datasets.Image):
                fail(f"{split}: image feature is {features['image']!r}, not Image()")
            if features["index"] != datasets.Value("int64"):
                fail(f"{split}: index feature is {features['index']!r}")
            label = features["label"]
            names = getattr(label, "names", None)
            if manifest and manifest["classes"]:
                if names != manifest["classes"]:
                    fail(f"{split}: label names {names}, manifest says {manifest['classes']}")
            print(f"{split}: features {features}")
            if len(ds) == 0:
                continue
            # Row 0 and the last row: the image decodes to the size its own bytes say.
            raw = ds.cast_column("image", datasets.Image(decode=False))
            for i in (0, len(ds) - 1):
                row = ds[i]
                image = row["image"]
                if not isinstance(image, PIL.Image.Image):
                    fail(f"{split} row {i}: image is {type(image)}, not a PIL image")
                stored = PIL.Image.open(io.BytesIO(raw[i]["image"]["bytes"]))
                if image.size != stored.size or image.mode != "RGB":
                    fail(f"{split} row {i}: image {image.size} {image.mode}, bytes say {stored.size}")
                shown = label.int2str(row["label"]) if names and row["label"] >= 0 else row["label"]
                print(f"{split}[{i}]: {image.mode} {image.size[0]}x{image.size[1]} image, "
                      f"label {row['label']} ({shown}), index {row['index']}")

    frame = pandas.read_parquet(data)
    total = sum(len(by_dir[s]) for s in by_dir)
    if len(frame) != total or list(frame.columns) != ["image", "label", "index"]:
        fail(f"pandas.read_parquet(OUT/data): {len(frame)} rows, columns {list(frame.columns)}; "
             f"expected {total} rows of image, label, index")
    print(f"pandas.read_parquet(OUT/data): {len(frame)} rows, columns {list(frame.columns)}")
    files = sorted(p.name for p in data.iterdir())
    if any(not f.endswith(".parquet") for f in files):
        fail(f"OUT/data holds more than Parquet files: {files}")
    meta = pq.read_schema(data / files[0]).metadata[b"huggingface"].decode()
    print(f"files: {', '.join(files)}")
    print(f"huggingface metadata: {meta}")
    print("check_hf_export: OK")


if __name__ == "__main__":
    main()
