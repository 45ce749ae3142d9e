"""Writes tests/fixtures/odd: small images of the kinds ssl-pack must turn into RGB8
(grayscale, CMYK, palette, 16-bit, alpha), and Pillow's RGB channel means for each.

    pip install pillow numpy && python3 tools/make_fixtures.py
"""
import json
import pathlib

import numpy as np
from PIL import Image

out = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/odd"
out.mkdir(parents=True, exist_ok=True)
y, x = np.mgrid[0:24, 0:40]
rgb = np.stack([x * 6, y * 10, (x + y) * 4], -1).astype(np.uint8)
base = Image.fromarray(rgb)
made = {
    "gray.jpg": base.convert("L"),
    "cmyk.jpg": base.convert("CMYK"),
    "palette.png": base.convert("P", palette=Image.ADAPTIVE, colors=16),
    "rgba.png": base.convert("RGBA"),
    "gray_alpha.png": base.convert("LA"),
    "gray16.png": Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257),
}
expected = {}
for name, img in made.items():
    img.save(out / name, quality=95) if name.endswith(".jpg") else img.save(out / name)
    back = np.asarray(Image.open(out / name).convert("RGB"), dtype=np.float64)
    # 16-bit grayscale: Pillow clips I;16 to 255 on convert; the right 8-bit value is v/257.
    if name == "gray16.png":
        v = np.asarray(Image.open(out / name), dtype=np.float64) / 257.0
        back = np.stack([v, v, v], -1)
    tol = 4.0 if name.endswith(".jpg") else 1.0
    expected[name] = {"mean": [round(float(back[..., c].mean()), 2) for c in range(3)], "tolerance": tol}
(out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
print(json.dumps(expected))
