"""Writes tests/fixtures/augment/ffcv_views.safetensors for tests/augment_reference.rs: views that
fastssl's pipeline (FFCV's crop decoder with cv2 INTER_AREA, flip, fastssl's ColorJitter and
RandomGrayscale, as transcribed in tools/reference_torch.py) makes from real CIFAR-10 images with
given parameters, so that our ops can be checked pixel by pixel on the same parameters.

Tensors: `source` u8 [N, 32, 32, 3] (the first N test images of a packed CIFAR-10), `params`
f32 [M, 10] (image, top, left, height, width, flip, brightness, contrast, saturation — all 0 when
not jittered — and grey), and for each output side S `resized_S` (the crop resized) and `views_S`
(the whole view), u8 [M, S, S, 3].

    pip install numpy pyarrow opencv-python-headless safetensors torch
    python3 tools/augment_fixtures.py target/packed/cifar10
"""
import pathlib
import sys

import numpy as np
import torch
from safetensors.torch import save_file

import reference_torch as ref

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/augment/ffcv_views.safetensors"


def main(data):
    images, _ = ref.load_split(data, "test")
    source = np.ascontiguousarray(images[:8])
    rng = np.random.default_rng(7)
    params = []
    for m in range(48):
        img = m % len(source)
        # Small crops (enlarged), crops as large as the image, and everything between.
        top, left, h, w = ref.random_crop(rng, 32, 32, (0.08, 1.0) if m % 4 else (0.6, 1.0))
        flip = float(rng.random() < 0.5)
        jitter = [rng.uniform(0.6, 1.4) for _ in range(3)] if m % 3 else [0.0, 0.0, 0.0]
        gray = float(m % 5 == 0)
        params.append([img, top, left, h, w, flip, *jitter, gray])
    params = np.array(params, dtype=np.float32)
    tensors = {"source": torch.from_numpy(source), "params": torch.from_numpy(params)}
    # 32: crops enlarged (OpenCV's linear area mode); 24: shrinking by 3/4 rounds halves (the
    # area table); 16: both, and mixed axes.
    for side in (32, 24, 16):
        views, resized = [], []
        for img, top, left, h, w, flip, b, c, s, gray in params:
            v = ref.resize_area(source[int(img)], int(top), int(left), int(h), int(w), side)
            resized.append(v)
            if flip:
                v = v[:, ::-1]
            if b > 0:
                v = ref.color_jitter(v, b, c, s)
            if gray:
                v = ref.grayscale(v)
            views.append(np.ascontiguousarray(v))
        tensors[f"views_{side}"] = torch.from_numpy(np.stack(views))
        tensors[f"resized_{side}"] = torch.from_numpy(np.stack(resized))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, OUT)
    print(OUT, {k: tuple(v.shape) for k, v in tensors.items()})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "target/packed/cifar10")
