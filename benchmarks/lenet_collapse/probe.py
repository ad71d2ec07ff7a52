"""The probe on a LeNet-5's evaluation passes, and the small checks the two loops share."""

from __future__ import annotations

import hashlib
import math

from benchmarks.lenet_collapse import NUM_CLASSES


class Probe:
    """Watches a LeNet-5's evaluation passes: predicted classes and how many fc1 / fc2 ReLU units ever fire."""

    def __init__(self, model, relu1, relu2) -> None:
        self.handles = [
            model.register_forward_hook(self._output),
            relu1.register_forward_hook(lambda m, i, o: self._live(0, m, o)),
            relu2.register_forward_hook(lambda m, i, o: self._live(1, m, o)),
        ]
        self.reset()

    def reset(self) -> None:
        self.predictions: list = []
        self.live: list = [None, None]

    def _output(self, module, inputs, output) -> None:
        if not module.training:
            self.predictions.append(output.detach().argmax(1).cpu())

    def _live(self, k: int, module, output) -> None:
        if not module.training:
            fired = (output.detach() > 0).any(0).cpu()
            self.live[k] = fired if self.live[k] is None else self.live[k] | fired

    def take(self) -> dict:
        """The evaluation passes since the last take: predicted-class counts and live units; then reset."""
        import torch

        predicted = torch.cat(self.predictions) if self.predictions else torch.zeros(0, dtype=torch.long)
        counts = torch.bincount(predicted, minlength=NUM_CLASSES).tolist()
        out = {
            "pred_counts": counts,
            "classes": sum(c > 0 for c in counts),
            "fc1_live": None if self.live[0] is None else int(self.live[0].sum()),
            "fc2_live": None if self.live[1] is None else int(self.live[1].sum()),
        }
        self.reset()
        return out


def state_sha(model) -> str:
    """A short hash of the initial weights: equal hashes mean the two loops start from the same network."""
    h = hashlib.sha256()
    for tensor in model.state_dict().values():
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def finite(value: float) -> bool:
    return value is not None and math.isfinite(value)
