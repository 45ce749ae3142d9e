"""The step `ssl-bench step` times, in PyTorch: the same backbone (ResNet-18/34/50 with a width
multiplier and the CIFAR stem (3x3 conv) or the ImageNet stem (7x7 stride-2 conv, 3x3 stride-2
max-pool), or conv4), the same projector (Linear no bias -> BN -> ReLU -> Linear), the same
efficient Barlow Twins loss (lambda = 1/pdim) and AdamW (lr 1e-3, wd 1e-6), on random K-view
batches. Prints `sec/step=X` like ours, so tools/compare-step.sh can set them side by side.

    pip install torch && python3 tools/bench_step_torch.py --backbone resnet18 --width 64 \
        --batch 64 --size 32 --views 2 --steps 5 --threads 2
    python3 tools/bench_step_torch.py --backbone resnet50 --stem imagenet --size 224 --batch 16
"""
import argparse
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_bn(c_in, c_out, stride, kernel=3, relu=True):
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.body = nn.Sequential(conv_bn(c_in, c_out, stride), conv_bn(c_out, c_out, 1, relu=False))
        self.shortcut = (
            conv_bn(c_in, c_out, stride, kernel=1, relu=False)
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """torchvision's (v1.5: the stride on the 3x3 conv), expansion 4."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        mid = c_out // 4
        self.body = nn.Sequential(
            conv_bn(c_in, mid, 1, kernel=1), conv_bn(mid, mid, stride), conv_bn(mid, c_out, 1, kernel=1, relu=False)
        )
        self.shortcut = (
            conv_bn(c_in, c_out, stride, kernel=1, relu=False)
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x):
        return F.relu(self.body(x) + self.shortcut(x))


DEPTHS = {"resnet18": ([2, 2, 2, 2], BasicBlock, 1), "resnet34": ([3, 4, 6, 3], BasicBlock, 1),
          "resnet50": ([3, 4, 6, 3], Bottleneck, 4)}


def resnet(name, w, stem):
    depths, block, expansion = DEPTHS[name]
    if stem == "imagenet":
        layers = [conv_bn(3, w, 2, kernel=7), nn.MaxPool2d(3, 2, 1)]
    else:
        layers = [conv_bn(3, w, 1)]
    c = w
    for i, (n, planes) in enumerate(zip(depths, [w, 2 * w, 4 * w, 8 * w])):
        c_out = planes * expansion
        for j in range(n):
            layers.append(block(c, c_out, 2 if i > 0 and j == 0 else 1))
            c = c_out
    return nn.Sequential(*layers), c


def conv4(w):
    widths, strides = [w, 2 * w, 4 * w, 8 * w], [1, 2, 2, 2]
    layers, c = [], 3
    for c_out, s in zip(widths, strides):
        layers.append(conv_bn(c, c_out, s))
        c = c_out
    return nn.Sequential(*layers), c


class Model(nn.Module):
    def __init__(self, backbone, width, pdim, stem):
        super().__init__()
        self.backbone, feat = conv4(width) if backbone == "conv4" else resnet(backbone, width, stem)
        self.projector = nn.Sequential(
            nn.Linear(feat, pdim, bias=False), nn.BatchNorm1d(pdim), nn.ReLU(inplace=True), nn.Linear(pdim, pdim)
        )

    def forward(self, x):
        return self.projector(self.backbone(x).mean((2, 3)))


def barlow_twins(z, k, lam):
    z = F.normalize(z, dim=1)
    z = (z - z.mean(0)) / z.std(0).clamp_min(1e-6)
    views = z.chunk(k)
    b = views[0].shape[0]

    def off_diag_sq(c):
        return (c**2).sum() - (torch.diagonal(c) ** 2).sum()

    if k == 2:
        c = views[0].T @ views[1] / b
        return ((torch.diagonal(c) - 1) ** 2).sum() + lam * off_diag_sq(c)
    stacked = torch.stack(views)
    zbar = stacked.mean(0)
    on = (((stacked * zbar[None]).mean(1) - 1) ** 2).sum() / k
    return on + lam * off_diag_sq(zbar.T @ zbar / b)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", choices=["resnet18", "resnet34", "resnet50", "conv4"], default="resnet18")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--views", type=int, default=2)
    p.add_argument("--pdim", type=int, default=256)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stem", choices=["cifar", "imagenet"], default="cifar")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Model(a.backbone, a.width, a.pdim, a.stem)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-6)
    x = torch.randn(a.views * a.batch, 3, a.size, a.size)
    fwd = bwd = step = 0.0
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss = barlow_twins(model(x), a.views, 1.0 / a.pdim)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if i >= a.warmup:
            fwd, bwd, step = fwd + t1 - t0, bwd + t2 - t1, step + t3 - t2
    n = a.steps
    sec = (fwd + bwd + step) / n
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"torch {a.backbone}({a.width}) stem={a.stem} batch={a.batch} size={a.size} views={a.views} threads={a.threads}: "
        f"sec/step={sec:.4f} images/s={a.batch / sec:.1f} forward_s={fwd / n:.4f} backward_s={bwd / n:.4f} "
        f"optimizer_s={step / n:.4f} peak_rss_mb={rss_mb:.0f} loss={loss.item():.4f}"
    )


if __name__ == "__main__":
    main()
