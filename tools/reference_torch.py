"""The fastssl recipe in plain PyTorch, on the CPU, for comparing `ssl-train` against it.

fastssl (github.com/kumarkrishna/fastssl, the paper's code) pretrains with FFCV and
`scripts/train_model_multiPatch.py`. This file transcribes what that recipe does, detail by detail:
- views (`CifarTransformFFCV`, FFCV-SSL's pipeline on uint8 HWC images): FFCV's
  `get_random_crop` (torchvision's 10-try sampling) resized with cv2 `INTER_AREA` (FFCV's
  `RandomResizedCropRGBImageDecoder`), flip p=0.5, fastssl's `ColorJitter` (p=0.8; brightness,
  contrast, saturation in that fixed order, float arithmetic clipped after each step, the
  saturation grey and the result truncated to uint8), fastssl's `RandomGrayscale` (p=0.2,
  luma 0.2989/0.587/0.114 truncated), `NormalizeImage` with the CIFAR mean/std on 0..255;
- the model: all K views stacked into one batch (BatchNorm sees K·B rows), projector
  Linear(no bias) → BN → ReLU → Linear, `F.normalize` on its output; PyTorch's default init;
- the loss: `BarlowTwinLoss` (fastssl/models/barlow_twins.py), pairwise for K = 2, the O(K)
  form with the mean embedding for K > 2;
- Adam(lr, weight_decay) (coupled L2), no schedule, shuffled every epoch, `drop_last=False`;
- kNN (k = 200, cosine, T = 0.1, InstDisc weights) on clean train/test images, model in eval mode.
The backbone is ours (`conv4`, or ResNet-18/50 with torchvision parameter names); fastssl's
ResNets are the same networks as our CIFAR-stem ResNets.

Data comes from a dataset packed by `ssl-pack` (raw or JPEG/PNG rows, read with pyarrow), so
both trainers see the same pixels. `--batches-from DIR` trains on batches that our loader wrote
(`ssl-train ... --dump-batches DIR`) instead of making its own views: with `--init-from` (a
`model.safetensors` from `ssl-train`) this swaps the data paths of the two trainers.

    pip install torch torchvision numpy pyarrow opencv-python-headless safetensors
    python3 tools/reference_torch.py --data target/packed/cifar10 --backbone conv4 --width 32 \
        --views 4x32:0.08-1 --pdim 256 --lambda 0.01 --epochs 5 --out target/reference/run.jsonl
"""
import argparse
import json
import math
import pathlib
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# fastssl/data/cifar_transforms.py: mean and std of CIFAR-10 pixels on 0..255.
CIFAR_FFCV_MEAN = np.array([125.307, 122.961, 113.8575], dtype=np.float32)
CIFAR_FFCV_STD = np.array([51.5865, 50.847, 51.255], dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Data: a dataset packed by ssl-pack.


def load_split(data, split):
    """All images of `split` as uint8 [N, H, W, 3] (one size) and int64 labels, in index order."""
    import pyarrow.parquet as pq
    import pyarrow.ipc as ipc

    root = pathlib.Path(data)
    manifest = json.loads((root / "manifest.json").read_text())
    shards = manifest["splits"][split]["shards"]
    rows = []
    for shard in shards:
        path = root / shard["file"]
        table = pq.read_table(path) if path.suffix == ".parquet" else ipc.open_file(path).read_all()
        rows.extend(table.to_pylist())
    rows.sort(key=lambda r: r["index"])
    images = np.stack([decode(r) for r in rows])
    labels = np.array([r["label"] for r in rows], dtype=np.int64)
    return images, labels


def decode(row):
    if row["encoding"] == 0:
        return np.frombuffer(row["image"], dtype=np.uint8).reshape(row["height"], row["width"], 3)
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(row["image"])).convert("RGB"))


# ---------------------------------------------------------------------------------------------
# Views: FFCV-SSL's CIFAR pipeline as fastssl configures it.


def parse_views(spec):
    """`NxS[:lo-hi]` groups, e.g. `4x32:0.08-1` -> [(4, 32, (0.08, 1.0))]."""
    groups = []
    for part in spec.split(","):
        shape, _, scale = part.partition(":")
        n, s = (int(v) for v in shape.split("x"))
        lo, hi = (float(v) for v in scale.split("-")) if scale else (0.08, 1.0)
        groups.append((n, s, (lo, hi)))
    return groups


def random_crop(rng, height, width, scale, ratio=(3 / 4, 4 / 3)):
    """FFCV's `get_random_crop` (torchvision's sampling): (top, left, h, w)."""
    area = height * width
    log_ratio = np.log(ratio)
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = np.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(np.sqrt(target_area * aspect)))
        h = int(round(np.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.uniform(0, height - h + 1)), int(rng.uniform(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resize_area(img, top, left, h, w, side):
    """FFCV's `resize_crop`: cv2.resize(crop, INTER_AREA)."""
    import cv2

    crop = np.ascontiguousarray(img[top : top + h, left : left + w])
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)


def luma(img):
    return 0.2989 * img[:, :, 0:1] + 0.5870 * img[:, :, 1:2] + 0.1140 * img[:, :, 2:3]


def color_jitter(img, brightness, contrast, saturation):
    """fastssl's ColorJitter body (hue 0) for given factors; `img` uint8 HWC, returns uint8."""
    x = np.clip(brightness * img.astype(np.float64), 0, 255)
    x = np.clip(contrast * x + (1.0 - contrast) * luma(x).mean(), 0, 255)
    # `dst[i] = gray` stores the grey into the uint8 output: truncated, then broadcast.
    gray = luma(x).astype(np.uint8).astype(np.float64)
    x = np.clip(saturation * x + (1.0 - saturation) * gray, 0, 255)
    return x.astype(np.uint8)


def grayscale(img):
    """fastssl's RandomGrayscale body: luma truncated into every channel (numba computes
    `0.2989 * img` in float64 although `img` is float32)."""
    y = luma(img.astype(np.float64)).astype(np.uint8)
    return np.repeat(y, 3, axis=2)


class ViewMaker:
    """One view of an image per call, drawing from a numpy generator as FFCV's ops do."""

    def __init__(self, seed, jitter=(0.4, 0.4, 0.4), jitter_p=0.8, gray_p=0.2):
        self.rng = np.random.default_rng(seed)
        self.jitter, self.jitter_p, self.gray_p = jitter, jitter_p, gray_p

    def factor(self, strength):
        return self.rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength)

    def __call__(self, img, side, scale):
        top, left, h, w = random_crop(self.rng, img.shape[0], img.shape[1], scale)
        view = resize_area(img, top, left, h, w, side)
        if self.rng.random() < 0.5:
            view = view[:, ::-1]
        if self.rng.random() < self.jitter_p:
            view = color_jitter(view, *(self.factor(s) for s in self.jitter))
        if self.rng.random() < self.gray_p:
            view = grayscale(view)
        return view


def normalise(u8_nchw):
    """NormalizeImage, as a channels-last tensor: PyTorch's fast CPU convolutions need that layout."""
    x = torch.from_numpy(np.ascontiguousarray(u8_nchw)).float()
    mean = torch.from_numpy(CIFAR_FFCV_MEAN).view(1, 3, 1, 1)
    std = torch.from_numpy(CIFAR_FFCV_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------------------------------------
# Model: parameter names equal ssl-train's (`backbone.*`, `projector.*`).


class ConvBn(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)


class Conv4(nn.Module):
    """Ours: 4 x [conv3x3 - BN - ReLU], widths w, 2w, 4w, 8w, strides 1, 2, 2, 2."""

    def __init__(self, width):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 8 * width]
        self.layers = nn.ModuleList(ConvBn(chans[i], chans[i + 1], 1 if i == 0 else 2) for i in range(4))
        self.feature_dim = 8 * width

    def forward(self, x):
        for layer in self.layers:
            x = F.relu(layer.bn(layer.conv(x)))
        return x.mean((2, 3))


class Block(nn.Module):
    """torchvision's BasicBlock / Bottleneck (stride on the 3x3), with its names."""

    def __init__(self, c_in, planes, stride, bottleneck):
        super().__init__()
        out = planes * (4 if bottleneck else 1)
        shapes = [(c_in, planes, 1, 1), (planes, planes, 3, stride), (planes, out, 1, 1)] if bottleneck \
            else [(c_in, planes, 3, stride), (planes, planes, 3, 1)]
        for i, (a, b, k, s) in enumerate(shapes, 1):
            setattr(self, f"conv{i}", nn.Conv2d(a, b, k, s, k // 2, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(b))
        self.n = len(shapes)
        self.downsample = None
        if stride != 1 or c_in != out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        y = x
        for i in range(1, self.n + 1):
            y = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(y))
            if i < self.n:
                y = F.relu(y)
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    def __init__(self, depth, width, cifar_stem=True):
        super().__init__()
        blocks = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}[depth]
        bottleneck = depth == 50
        self.cifar_stem = cifar_stem
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False) if cifar_stem else nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        c_in = width
        for l, n in enumerate(blocks):
            planes = width << l
            layer = []
            for b in range(n):
                layer.append(Block(c_in, planes, 2 if l > 0 and b == 0 else 1, bottleneck))
                c_in = planes * (4 if bottleneck else 1)
            setattr(self, f"layer{l + 1}", nn.Sequential(*layer))
        self.feature_dim = c_in

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if not self.cifar_stem:
            x = F.max_pool2d(x, 3, 2, 1)
        for l in range(1, 5):
            x = getattr(self, f"layer{l}")(x)
        return x.mean((2, 3))


class Hidden(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.linear = nn.Linear(d_in, d_out, bias=False)
        self.bn = nn.BatchNorm1d(d_out)


class Projector(nn.Module):
    def __init__(self, d_in, pdim):
        super().__init__()
        self.layers = nn.ModuleList([Hidden(d_in, pdim)])
        self.out = nn.Linear(pdim, pdim)

    def forward(self, x):
        for h in self.layers:
            x = F.relu(h.bn(h.linear(x)))
        return self.out(x)


class SslModel(nn.Module):
    def __init__(self, backbone, width, pdim, cifar_stem=True):
        super().__init__()
        if backbone == "conv4":
            self.backbone = Conv4(width)
        else:
            self.backbone = ResNet(int(backbone.removeprefix("resnet")), width, cifar_stem)
        self.projector = Projector(self.backbone.feature_dim, pdim)

    def forward(self, x):
        # fastssl's BarlowTwins.forward: the L2-normalised projection.
        return F.normalize(self.projector(self.backbone(x)), dim=-1)


def load_weights(model, path):
    """Loads a `model.safetensors` written by ssl-train (same names; BN's counter aside)."""
    from safetensors.torch import load_file

    saved = load_file(path)
    missing, unexpected = model.load_state_dict(saved, strict=False)
    missing = [m for m in missing if not m.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise SystemExit(f"{path}: missing {missing}, unexpected {unexpected}")


def state_for_ours(model):
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


# ---------------------------------------------------------------------------------------------
# Loss: fastssl/models/barlow_twins.py, BarlowTwinLoss, on the normalised projections.


def off_diagonal(x):
    n, m = x.shape
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def barlow_twins(z, num_augs, lam):
    bsz = z.shape[0] // num_augs
    z_norm = (z - z.mean(0)) / z.std(0)
    z_norm_list = torch.chunk(z_norm, num_augs)
    z_norm_sum = torch.sum(torch.stack(z_norm_list), dim=0)
    if num_augs == 2:
        on_diag = off_diag = 0.0
        for i in range(num_augs):
            z1 = z_norm_list[i]
            z2 = (z_norm_sum - z_norm_list[i]) / (num_augs - 1)
            c = torch.mm(z1.T, z2) / bsz
            on_diag = on_diag + torch.diagonal(c).add(-1).pow(2).sum()
            off_diag = off_diag + off_diagonal(c).pow(2).sum()
        return (on_diag + lam * off_diag) / num_augs
    z2 = z_norm_sum / num_augs
    on_diag = (torch.stack(z_norm_list) * z2.unsqueeze(0)).mean(1).add(-1).pow(2).sum()
    c_auto = torch.mm(z2.T, z2) / bsz
    return on_diag / num_augs + lam * off_diagonal(c_auto).pow(2).sum()


def vicreg(z, num_augs, lam=25.0, mu=25.0, nu=1.0):
    """fastssl/models/vicreg.py, VICRegLoss, on the raw projections (`nu` weights the covariance)."""
    z_list = z.chunk(num_augs)
    bsz, dim = z_list[0].shape
    all_z = torch.stack(z_list)
    z_center = all_z - all_z.mean(1, keepdim=True)
    z_sum, z_center_sum = all_z.sum(0), z_center.sum(0)
    repr_loss = std_loss = cov_loss = 0.0
    for i in range(1 if num_augs == 2 else num_augs):
        z1, z1c = z_list[i], z_center[i]
        z2 = (z_sum - z_list[i]) / (num_augs - 1)
        z2c = (z_center_sum - z_center[i]) / (num_augs - 1)
        repr_loss = repr_loss + F.mse_loss(z1, z2)
        std_loss = std_loss + F.relu(1 - z1.std(0)).mean() / 2 + F.relu(1 - z2.std(0)).mean() / 2
        for c in (z1c, z2c):
            cov_loss = cov_loss + off_diagonal(c.T @ c / (bsz - 1)).pow(2).sum() / dim
    loss = lam * repr_loss + mu * std_loss + nu * cov_loss
    return loss if num_augs == 2 else loss / num_augs


# ---------------------------------------------------------------------------------------------
# Evaluation: weighted kNN on clean images.


@torch.no_grad()
def features(model, images, batch=1000):
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        out.append(model.backbone(normalise(images[i : i + batch].transpose(0, 3, 1, 2))))
    model.train()
    return F.normalize(torch.cat(out), dim=1)


@torch.no_grad()
def knn_top1(bank, bank_labels, queries, query_labels, k=200, t=0.1, classes=10):
    correct = 0
    bank_labels = torch.from_numpy(bank_labels)
    for i in range(0, len(queries), 500):
        sim = queries[i : i + 500] @ bank.T
        top, idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(top), classes).scatter_add_(1, bank_labels[idx], (top / t).exp())
        correct += (votes.argmax(1).numpy() == query_labels[i : i + 500]).sum()
    return correct / len(queries)


# ---------------------------------------------------------------------------------------------
# Training.


def make_batch(images, order, maker, groups):
    """The views of `images[order]`, group by group, view-major: uint8 [V*B, 3, S, S] each."""
    out = []
    for n, side, scale in groups:
        views = np.empty((n, len(order), side, side, 3), dtype=np.uint8)
        for b, idx in enumerate(order):
            for v in range(n):
                views[v, b] = maker(images[idx], side, scale)
        out.append(views.reshape(n * len(order), side, side, 3).transpose(0, 3, 1, 2))
    return out


def dumped_batches(root, epoch):
    """Batches written by `ssl-train --dump-batches`: `epoch-E/batch-NNNNN-gG.npy`."""
    folder = pathlib.Path(root) / f"epoch-{epoch}"
    files = sorted(folder.glob("batch-*-g0.npy"))
    if not files:
        raise SystemExit(f"{folder}: no dumped batches")
    for f in files:
        groups, g = [], 0
        while (p := f.with_name(f.name.replace("-g0.npy", f"-g{g}.npy"))).exists():
            groups.append(np.load(p))
            g += 1
        yield groups


def run(args):
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    train_x, train_y = load_split(args.data, "train")
    test_x, test_y = load_split(args.data, "test")
    groups = parse_views(args.views)
    k = sum(n for n, _, _ in groups)
    model = SslModel(args.backbone, args.width, args.pdim)
    if args.init_from:
        load_weights(model, args.init_from)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    out = open(args.out, "w") if args.out else None

    def report(record):
        line = json.dumps(record)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    def knn():
        return knn_top1(features(model, train_x), train_y, features(model, test_x), test_y)

    report({"epoch": 0, "knn_top1": knn(), "note": "random init"})
    maker = ViewMaker(args.seed + 1)
    order_rng = np.random.default_rng(args.seed)
    for epoch in range(args.epochs):
        start, losses = time.time(), []
        if args.batches_from:
            batches = dumped_batches(args.batches_from, epoch)
        else:
            perm = order_rng.permutation(len(train_x))
            last = len(perm) - len(perm) % args.batch if args.drop_last else len(perm)
            batches = (make_batch(train_x, perm[i : i + args.batch], maker, groups) for i in range(0, last, args.batch))
        for step, views in enumerate(batches):
            if args.max_steps and step >= args.max_steps:
                break
            # One forward per resolution; features concatenated in view order, as ours.
            feats = torch.cat([model.backbone(normalise(v)) for v in views])
            z = F.normalize(model.projector(feats), dim=-1)
            loss = barlow_twins(z, k, args.lam)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if step % 20 == 0:
                print(f"epoch {epoch + 1} step {step} loss {loss.item():.4f}", flush=True)
        report({"epoch": epoch + 1, "knn_top1": knn(), "loss": float(np.mean(losses)), "seconds": time.time() - start})
    if args.save:
        from safetensors.torch import save_file

        save_file(state_for_ours(model), args.save)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a dataset packed by ssl-pack (train and test splits)")
    p.add_argument("--backbone", default="conv4", choices=["conv4", "resnet18", "resnet34", "resnet50"])
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--views", default="4x32:0.08-1")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--pdim", type=int, default=256)
    p.add_argument("--lambda", dest="lam", type=float, default=0.01)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-6)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--max-steps", type=int, default=0, help="steps per epoch at most (0: all)")
    p.add_argument("--drop-last", action="store_true", help="fastssl keeps the last short batch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--init-from", help="model.safetensors from ssl-train: start from these weights")
    p.add_argument("--batches-from", help="train on batches written by `ssl-train --dump-batches`")
    p.add_argument("--save", help="write the trained weights here (safetensors, our names)")
    p.add_argument("--out", help="per-epoch records as JSON lines")
    run(p.parse_args())


if __name__ == "__main__":
    main()
