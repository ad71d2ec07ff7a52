"""Measure, per model, the MB of activations autograd saves for backward per 352x352 training image.

A forward pass on the CPU at batch size 2 under `torch.autograd.graph.saved_tensors_hooks`: the bytes of
every distinct storage saved for backward, halved. These feed the catalog records' activation_mb, the input
of the fractional-GPU rule. Run: python benchmarks/activation_memory.py [--image-size 352]
"""

import argparse
import json

import torch

from raybench import catalog, models


def saved_mb_per_image(name: str, image_size: int, batch: int = 2) -> float:
    torch.manual_seed(0)
    model = models.build_model(name, image_size=image_size).train()
    x = torch.randn(batch, catalog.configuration(name).channels, image_size, image_size)
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        if t.device.type != "meta":
            storage = t.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = sum(n for ptr, n in storages.items() if ptr not in params)
    return saved / batch / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=352)
    parser.add_argument("--models", nargs="*", default=list(catalog.MODEL_NAMES))
    args = parser.parse_args()
    table = {}
    for name in args.models:
        table[name] = round(saved_mb_per_image(name, args.image_size), 1)
        print(f"{name:16s} {table[name]:8.1f} MB/image", flush=True)
    print(json.dumps(table))


if __name__ == "__main__":
    main()
