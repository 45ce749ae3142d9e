#!/usr/bin/env python3
"""`ssl-bench loader`'s scenario in PyTorch: a torchvision DataLoader making K uint8 views per
image from OUR packed dataset, timed the same way. `tools/compare-loader.sh` runs both.

    python3 tools/loader_torch.py --data target/packed/cifar10 --views 2x32:0.14-1,6x16:0.05-0.14 \
        --augment ffcv --batch 256 --threads 2 --batches 100

Prints one line in `ssl-bench loader`'s key=value style:
    torchvision 2x32:0.08-1 batch=256 workers=2: images/s=... views/s=... MB/s=... first_batch_s=...

The dataset: the Parquet shards DIR/<split>/part-*.parquet (columns index, label, image, height,
width, encoding: 0 raw RGB8 HWC, 1 JPEG, 2 PNG) are read with pyarrow into memory once, the image
column kept as one Arrow buffer (no Python object per image, so forked workers share its pages).
Raw rows are a numpy view reshaped to HxWx3; JPEG/PNG rows are decoded with Pillow, per item
(`--cache stream`) or all up front (`--cache decoded`); `--cache auto` decodes up front when the
pixels fit in 2 GiB, as our loader's `cache = "auto"` does (`decoded_cache_bytes`).

Per view, as our loader (src/loader/augment) with torchvision.transforms.v2 on uint8 CHW tensors:
RandomResizedCrop(S, scale=(lo, hi), ratio=(3/4, 4/3), antialias=True) (bilinear: compare with our
`--interpolation bilinear`; our default is OpenCV's INTER_AREA, which torchvision lacks),
RandomHorizontalFlip(0.5); for `ffcv` and `full` colour jitter with p 0.8, brightness, contrast
and saturation 0.4 each, in that fixed order as fastssl (and ours) apply them, through
torchvision's own adjust_* kernels (`--jitter torchvision` uses v2.ColorJitter, which shuffles
the order per image); for `full` also RandomGrayscale(0.2). Output: per view group one u8 tensor
[N*B, 3, S, S], view-major like our batches (assembled in the workers by the collate function),
and the labels; no normalisation (our loader also yields u8 and normalises on the device).

Left different (bit-level or bookkeeping, not work done): torchvision's uint8 jitter runs in
float32 and truncates to uint8 after every step, and its contrast mean is over floored luma;
ours (fastssl's arithmetic) runs each pixel in f64 and truncates once. Random draws differ (torch's
generator, not ours), so crops differ image by image but not in distribution.
"""

import argparse
import glob
import io
import os
import resource
import time
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

DEFAULT_SCALE = (0.08, 1.0)  # src/loader/views.rs DEFAULT_SCALE
DECODED_CACHE_BYTES = 2 << 30  # LoaderConfig::decoded_cache_bytes' default
RAW, JPEG, PNG = 0, 1, 2
# Pixels are read-only numpy views (Arrow buffers, decoded images); no transform writes in place.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def parse_views(spec):
    """`NxS[:lo-hi]` groups separated by commas, as src/loader/views.rs parses them."""
    groups = []
    for part in spec.split(","):
        part = part.strip()
        shape, _, scale = part.partition(":")
        count, size = shape.lower().split("x")
        lo, hi = (float(v) for v in scale.split("-")) if scale else DEFAULT_SCALE
        if not (int(count) >= 1 and int(size) >= 1 and 0 < lo <= hi <= 1):
            raise SystemExit(f"bad view spec `{spec}` (expected e.g. `2x32:0.14-1,6x16:0.05-0.14`)")
        groups.append((int(count), int(size), (lo, hi)))
    return groups


class FixedOrderJitter(torch.nn.Module):
    """fastssl's ColorJitter order: brightness, contrast, saturation, each factor from
    [max(0, 1-x), 1+x], with torchvision's uint8 kernels. Wrapped in RandomApply(p=0.8)."""

    def __init__(self, brightness=0.4, contrast=0.4, saturation=0.4):
        super().__init__()
        self.strengths = (brightness, contrast, saturation)

    def forward(self, img):
        b, c, s = (float(torch.empty(1).uniform_(max(0.0, 1 - x), 1 + x)) for x in self.strengths)
        img = F.adjust_brightness(img, b)
        img = F.adjust_contrast(img, c)
        return F.adjust_saturation(img, s)


def view_transform(size, scale, augment, jitter):
    ops = [
        v2.RandomResizedCrop(size, scale=scale, ratio=(3 / 4, 4 / 3), antialias=True),
        v2.RandomHorizontalFlip(0.5),
    ]
    if augment in ("ffcv", "full"):
        if jitter == "torchvision":
            ops.append(v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.0)], p=0.8))
        else:
            ops.append(v2.RandomApply([FixedOrderJitter()], p=0.8))
    if augment == "full":
        ops.append(v2.RandomGrayscale(0.2))
    return v2.Compose(ops)


class PackedKViews(Dataset):
    """One split of a dataset written by `ssl-pack` (Parquet shards), K views per item."""

    def __init__(self, data, split, groups, augment, cache, jitter):
        paths = sorted(glob.glob(os.path.join(data, split, "part-*.parquet")))
        if not paths:
            raise SystemExit(f"{data}/{split}: no part-*.parquet shards (Arrow IPC containers are not read here)")
        table = pa.concat_tables(
            [pq.read_table(p, columns=["label", "image", "height", "width", "encoding"]) for p in paths]
        )
        self.labels = table.column("label").to_numpy().astype(np.int64)
        self.heights = table.column("height").to_numpy().astype(np.int64)
        self.widths = table.column("width").to_numpy().astype(np.int64)
        self.encodings = table.column("encoding").to_numpy().astype(np.int64)
        col = table.column("image").combine_chunks()
        _, offsets, values = col.buffers()
        off_type = np.int64 if pa.types.is_large_binary(col.type) else np.int32
        self.offsets = np.frombuffer(offsets, dtype=off_type)[col.offset : col.offset + len(col) + 1]
        self.values = np.frombuffer(values, dtype=np.uint8) if values is not None else np.zeros(0, np.uint8)
        self.transforms = [(n, view_transform(s, sc, augment, jitter)) for n, s, sc in groups]
        pixels = int((self.heights * self.widths * 3).sum())
        all_raw = bool((self.encodings == RAW).all())
        self.decoded = None
        if not all_raw and (cache == "decoded" or (cache == "auto" and pixels <= DECODED_CACHE_BYTES)):
            self.decoded = [self._decode(i) for i in range(len(self))]
        self.decoded_in_memory = all_raw or self.decoded is not None

    def __len__(self):
        return len(self.labels)

    def _decode(self, i):
        buf = self.values[self.offsets[i] : self.offsets[i + 1]]
        h, w, enc = int(self.heights[i]), int(self.widths[i]), int(self.encodings[i])
        if enc == RAW:
            return buf.reshape(h, w, 3)
        if enc in (JPEG, PNG):
            return np.asarray(Image.open(io.BytesIO(buf.tobytes())).convert("RGB"))
        raise ValueError(f"row {i}: unknown encoding {enc}")

    def __getitem__(self, i):
        hwc = self.decoded[i] if self.decoded is not None else self._decode(i)
        img = torch.from_numpy(hwc).permute(2, 0, 1)  # CHW view of the HWC pixels, no copy
        views = tuple(torch.stack([t(img) for _ in range(n)]) for n, t in self.transforms)
        return views, int(self.labels[i])


def collate_view_major(items):
    """Per view group a contiguous u8 [N*B, 3, S, S], view-major as our batches are."""
    groups = []
    for g in range(len(items[0][0])):
        stacked = torch.stack([views[g] for views, _ in items], dim=1)  # [N, B, 3, S, S]
        groups.append(stacked.reshape(-1, *stacked.shape[2:]))
    return groups, torch.tensor([label for _, label in items])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--views", default="2x32:0.08-1")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--threads", type=int, default=2, help="DataLoader workers")
    p.add_argument("--batches", type=int, default=100, help="batches timed after the warm-up")
    p.add_argument("--warmup", type=int, default=3, help="batches before timing")
    p.add_argument("--augment", choices=["full", "ffcv", "crop"], default="full")
    p.add_argument("--cache", choices=["auto", "decoded", "stream"], default="auto")
    p.add_argument("--jitter", choices=["fixed", "torchvision"], default="fixed")
    p.add_argument("--prefetch", type=int, default=2, help="DataLoader prefetch_factor (batches per worker)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    torch.manual_seed(a.seed)
    groups = parse_views(a.views)
    k = sum(n for n, _, _ in groups)
    start = time.perf_counter()
    ds = PackedKViews(a.data, a.split, groups, a.augment, a.cache, a.jitter)
    workers = max(1, a.threads)
    loader = DataLoader(
        ds,
        batch_size=a.batch,
        shuffle=True,
        num_workers=workers,
        persistent_workers=True,
        prefetch_factor=a.prefetch,
        collate_fn=collate_view_major,
        generator=torch.Generator().manual_seed(a.seed),
    )

    def batches():
        while True:  # epochs back to back, as ssl-bench loader does
            yield from loader

    it = batches()
    first, _ = next(it)
    first_batch_s = time.perf_counter() - start
    per_image_bytes = sum(g.numel() for g in first) // (len(first[0]) // groups[0][0])
    for _ in range(max(0, a.warmup - 1)):
        next(it)
    images, t0 = 0, time.perf_counter()
    for _ in range(a.batches):
        views, labels = next(it)
        images += len(labels)
    elapsed = time.perf_counter() - t0
    ips = images / elapsed
    spec = ",".join(f"{n}x{s}:{lo:g}-{hi:g}" for n, s, (lo, hi) in groups)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"torchvision {spec} batch={a.batch} workers={workers}: images/s={ips:.0f} views/s={ips * k:.0f} "
        f"MB/s={ips * per_image_bytes / 1e6:.1f} first_batch_s={first_batch_s:.3f} "
        f"main_peak_rss_mb={rss:.0f} decoded_in_memory={str(ds.decoded_in_memory).lower()} "
        f"augment={a.augment} jitter={a.jitter} torch={torch.__version__}"
    )


if __name__ == "__main__":
    main()
