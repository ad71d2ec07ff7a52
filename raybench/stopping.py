"""Thesis figure 4.5: the early-stopping rule, which both picks the tested checkpoint and stops training.

Torch-free, so that whoever needs the rule (the loop, the console's ETA) asks this one object.
"""

from __future__ import annotations

import dataclasses
import math

from raybench.spec import TrainConfig


@dataclasses.dataclass
class EarlyStopping:
    """From 0-based epoch `start` on, an epoch improves when it is the first one considered or when its
    mean validation loss is finite and strictly below best - min_delta (mode "absolute", §4.4's) or below
    best x (1 - min_delta) (mode "relative", §7.2); `patience` epochs without improvement stop. The tested
    checkpoint is the last improvement (the thesis's) or, with tested="lowest_val_loss", the epoch with the
    lowest validation loss from `start` on (the earliest of equal ones).
    """

    start: int = 10
    patience: int = 20
    min_delta: float = 0.1
    mode: str = "absolute"
    tested: str = "last_improvement"
    epochs_seen: int = 0
    best: float | None = None  # the loss of the last improvement, which later ones must beat
    best_epoch: int | None = None  # 0-based: the last improvement
    bad_epochs: int = 0
    lowest: float | None = None
    lowest_epoch: int | None = None

    @classmethod
    def from_config(cls, config: TrainConfig) -> EarlyStopping:
        return cls(
            start=config.es_start,
            patience=config.es_patience,
            min_delta=config.es_min_delta,
            mode=config.es_mode,
            tested=config.tested,
        )

    def step(self, val_loss: float) -> bool:
        """Record one epoch's validation loss; True when this epoch becomes the tested checkpoint (save it)."""
        epoch = self.epochs_seen
        self.epochs_seen += 1
        if epoch < self.start:
            return False
        finite = math.isfinite(val_loss)  # a non-finite loss is never an improvement, nor the lowest
        if finite and (self.lowest is None or val_loss < self.lowest):
            self.lowest, self.lowest_epoch = val_loss, epoch
        if finite and (self.best is None or val_loss < self._bar()):
            self.best, self.best_epoch, self.bad_epochs = val_loss, epoch, 0
        else:
            self.bad_epochs += 1
        return self.tested_epoch == epoch

    def _bar(self) -> float:
        return self.best * (1 - self.min_delta) if self.mode == "relative" else self.best - self.min_delta

    @property
    def tested_epoch(self) -> int | None:
        """The 0-based epoch whose checkpoint is tested, None before `start`."""
        return self.lowest_epoch if self.tested == "lowest_val_loss" else self.best_epoch

    @property
    def tested_loss(self) -> float | None:
        return self.lowest if self.tested == "lowest_val_loss" else self.best

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    @property
    def earliest_stop(self) -> int:
        """The fewest epochs a trial can train before this rule ends it: its first considered epoch improves, then
        `patience` epochs do not."""
        return self.start + self.patience + 1

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, state[field.name])
