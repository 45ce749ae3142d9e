"""Writes tests/fixtures/torch_step/*.safetensors for tests/torch_step.rs: for conv4 and
ResNet-18, Barlow Twins and VICReg, K = 2 and 4, PyTorch's loss and gradients of one training
step (model in train mode) from given weights and a given input batch, computed by the models
and losses of tools/reference_torch.py. Each file holds `weight.<name>` (our parameter names,
PyTorch's default init), `input` (the normalised batch, view-major), `loss` and `grad.<name>`,
and its settings in the metadata.

    pip install torch numpy safetensors && python3 tools/torch_step_fixtures.py
"""
import json
import pathlib

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import reference_torch as ref

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/torch_step"
CASES = [
    # (backbone, width, views, batch per view, side, pdim, loss, stem)
    ("conv4", 4, 2, 8, 16, 16, "barlow-twins", "cifar"),
    ("conv4", 4, 4, 8, 16, 16, "barlow-twins", "cifar"),
    ("conv4", 4, 4, 8, 16, 16, "vicreg", "cifar"),
    ("resnet18", 4, 2, 6, 16, 16, "barlow-twins", "cifar"),
    ("resnet18", 4, 4, 6, 16, 16, "barlow-twins", "cifar"),
    ("resnet18", 4, 2, 6, 16, 16, "vicreg", "cifar"),
    # torchvision's stem: 7x7 stride-2 conv, then MaxPool2d(3, 2, padding 1).
    ("resnet18", 4, 2, 6, 32, 16, "barlow-twins", "imagenet"),
]
LAMBDA = 0.05


def case(backbone, width, k, b, side, pdim, loss, stem, seed):
    torch.manual_seed(seed)
    model = ref.SslModel(backbone, width, pdim, cifar_stem=stem == "cifar")
    weights = ref.state_for_ours(model)
    x = torch.randn(k * b, 3, side, side)
    z = model.projector(model.backbone(x))
    if loss == "barlow-twins":
        value = ref.barlow_twins(F.normalize(z, dim=-1), k, LAMBDA)
    else:
        value = ref.vicreg(z, k)
    value.backward()
    tensors = {f"weight.{n}": t.clone() for n, t in weights.items()}
    tensors["input"] = x
    tensors["loss"] = value.detach().reshape(1)
    for name, p in model.named_parameters():
        tensors[f"grad.{name}"] = p.grad.contiguous()
    meta = dict(backbone=backbone, width=width, k=k, pdim=pdim, loss=loss, stem=stem, **{"lambda": LAMBDA})
    return tensors, {"settings": json.dumps(meta)}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(CASES):
        backbone, width, k, b, side, pdim, loss, stem = c
        tensors, meta = case(*c, seed=i)
        suffix = "" if stem == "cifar" else f"-{stem}"
        name = f"{backbone}-k{k}-{loss}{suffix}.safetensors"
        save_file(tensors, OUT / name, metadata=meta)
        print(name, float(tensors["loss"]))


if __name__ == "__main__":
    main()
