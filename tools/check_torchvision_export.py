#!/usr/bin/env python3
"""Checks `ssl-export --to torchvision` against `ssl-eval features` in PyTorch.

    python tools/check_torchvision_export.py OUT.pth FEATURES.parquet [--tol 1e-3]

Builds `torchvision.models.resnet18/34/50()` with the documented changes (`fc = Identity()`;
for the CIFAR stem also `conv1 = Conv2d(3, 64, 3, 1, 1, bias=False)` and
`maxpool = Identity()`), loads OUT (`.pth` with `torch.load(weights_only=True)`, or
`.safetensors`) with `strict=True`, reads the images FEATURES names (its `sslfast` metadata:
dataset, split, side, mean, std; its `index` column) from the packed dataset with pyarrow,
normalises them as sslfast does and compares torchvision's features with ours. The centre view
is rebuilt only where it is the identity: images already square at the evaluation side.

Prints one JSON line (max_abs_diff, max_abs_feature, rows, model, stem) and exits 1 when the
largest difference exceeds --tol. Needs torch, torchvision, pyarrow, numpy (and safetensors for
.safetensors; Pillow for JPEG/PNG rows).
"""

import argparse
import io
import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import torch
import torchvision


def load_state(path):
    if path.endswith(".safetensors"):
        import safetensors.torch

        return safetensors.torch.load_file(path)
    return torch.load(path, weights_only=True)


def build_model(state):
    """The torchvision ResNet that `state` belongs to, with the documented changes."""
    if "layer1.0.conv3.weight" in state:
        name = "resnet50"
    elif "layer3.5.conv1.weight" in state:
        name = "resnet34"
    else:
        name = "resnet18"
    model = getattr(torchvision.models, name)()
    model.fc = torch.nn.Identity()
    cifar = state["conv1.weight"].shape[-1] == 3
    if cifar:
        model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
    model.load_state_dict(state, strict=True)
    return model.eval(), name, "cifar" if cifar else "imagenet"


def read_rows(data, split, wanted):
    """{index: (label, HWC uint8 array)} for the rows of `split` whose index is in `wanted`."""
    with open(os.path.join(data, "manifest.json")) as f:
        manifest = json.load(f)
    rows = {}
    for shard in manifest["splits"][split]["shards"]:
        path = os.path.join(data, shard["file"])
        if manifest["container"] == "arrow":
            table = pa.ipc.open_file(path).read_all()
        else:
            table = pq.read_table(path)
        cols = {c: table.column(c).to_pylist() for c in ("index", "label", "height", "width", "encoding")}
        images = table.column("image")
        for r, index in enumerate(cols["index"]):
            if index not in wanted:
                continue
            raw = images[r].as_py()
            h, w = cols["height"][r], cols["width"][r]
            if cols["encoding"][r] == 0:
                pixels = np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)
            else:
                from PIL import Image

                pixels = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
            rows[index] = (cols["label"][r], pixels)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("state", help="ssl-export's output (.pth or .safetensors)")
    ap.add_argument("features", help="ssl-eval features' Parquet file")
    ap.add_argument("--tol", type=float, default=1e-3)
    args = ap.parse_args()

    model, name, stem = build_model(load_state(args.state))
    pf = pq.ParquetFile(args.features)
    meta = json.loads(pf.metadata.metadata[b"sslfast"])
    table = pf.read()
    indices = table.column("index").to_pylist()
    labels = table.column("label").to_pylist()
    ours = np.stack([np.asarray(f, dtype=np.float32) for f in table.column("features").to_pylist()])

    rows = read_rows(meta["data"], meta["split"], set(indices))
    side = meta["side"]
    images = []
    for index, label in zip(indices, labels):
        if index not in rows:
            sys.exit(f"{meta['data']}: split {meta['split']} has no row with index {index}")
        stored_label, pixels = rows[index]
        if stored_label != label:
            sys.exit(f"index {index}: label {label} in the features, {stored_label} in the data")
        if pixels.shape[:2] != (side, side):
            sys.exit(
                f"index {index} is {pixels.shape[1]}x{pixels.shape[0]}, not {side}x{side}: this "
                "check rebuilds only identity centre views (pack the images at the eval size)"
            )
        images.append(pixels)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(meta["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(meta["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        theirs = model((x - mean) / std).numpy()
    diff = float(np.abs(theirs - ours).max())
    print(json.dumps({
        "model": name,
        "stem": stem,
        "rows": len(indices),
        "side": side,
        "max_abs_diff": diff,
        "max_abs_feature": float(np.abs(ours).max()),
    }))
    if not diff < args.tol:
        sys.exit(f"features differ by {diff} (tolerance {args.tol})")


if __name__ == "__main__":
    main()
