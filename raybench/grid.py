"""Grid files: experiments declared as Python data, loaded, validated and expanded into trials (no torch, no Ray).

A grid file defines `GRID`, a dict:

    GRID = {
        "name": "thesis",                      # default results folder name
        "data": None,                          # dataset path; None = the embedded 400-image sample
        "tiers": {"tiny": 400, ...},           # optional: custom tier sizes (default: thesis table 4.1)
        "seeds": [0],                          # every sweep is run once per seed
        "options": {"max_epochs": 100},        # TrainConfig options for every trial
        "sweeps": [                            # each sweep is models x tiers
            {"models": [...], "tiers": ["large", "medium", "small", "tiny"]},
            {"models": [...], "tiers": ["tiny"], "pretrained": True, "options": {...}},
        ],
    }
"""

from __future__ import annotations

import dataclasses
import re
import runpy
from pathlib import Path

from raybench import catalog
from raybench.spec import Trial, make_config

GRID_KEYS = ("name", "data", "tiers", "seeds", "options", "sweeps")
SWEEP_KEYS = ("models", "tiers", "pretrained", "seeds", "options")


@dataclasses.dataclass(frozen=True)
class Grid:
    """A validated grid: its name, data source, tier sizes and the expanded list of trials."""

    name: str
    data: str | None
    tiers: dict[str, int | None]
    trials: tuple[Trial, ...]

    def select(self, pattern: str) -> Grid:
        """The trials whose trial_id matches the regular expression `pattern` (search, not full match)."""
        try:
            regex = re.compile(pattern)
        except re.error as error:
            raise ValueError(f"--only {pattern!r} is not a valid regular expression ({error})") from None
        chosen = tuple(t for t in self.trials if regex.search(t.trial_id))
        if not chosen:
            raise ValueError(
                f"--only {pattern!r} matches no trial of grid {self.name!r}; "
                f"trial names look like {self.trials[0].trial_id!r}"
            )
        return dataclasses.replace(self, trials=chosen)

    def with_options(self, overrides: dict) -> Grid:
        """Every trial with the training options `overrides` applied (as `--set` does), validated as `expand` does."""
        trials = tuple(dataclasses.replace(t, config=dataclasses.replace(t.config, **overrides)) for t in self.trials)
        return dataclasses.replace(self, trials=trials)


def _check_keys(where: str, given: dict, valid: tuple[str, ...]) -> None:
    if not isinstance(given, dict):
        raise ValueError(f"{where} must be a dict, got {type(given).__name__}")
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(valid)}")


def _list(where: str, value, kind: type) -> list:
    items = [value] if isinstance(value, (kind, bool)) else list(value) if isinstance(value, (list, tuple)) else None
    if not items or not all(isinstance(v, kind) and not isinstance(v, bool) for v in items):
        raise ValueError(f"{where} must be a non-empty list of {kind.__name__}, got {value!r}")
    return items


def expand(declared: dict, *, source: str = "grid") -> Grid:
    """Validate a grid dict and expand it into trials; every problem is a ValueError naming the value."""
    _check_keys(source, declared, GRID_KEYS)
    if "sweeps" not in declared:
        raise ValueError(f"{source} has no 'sweeps': list the models and tiers to train")
    tiers = dict(declared.get("tiers") or catalog.TIERS)
    for tier, size in tiers.items():
        if size is not None and (not isinstance(size, int) or size < 10):
            raise ValueError(
                f"{source}: tier {tier!r} needs a size of at least 10 images (or None for all), got {size!r}"
            )
    base_options = declared.get("options") or {}
    make_config(base_options)  # unknown keys and bad values fail here, naming the key
    seeds = _list(f"{source}: seeds", declared.get("seeds", [0]), int)
    trials: list[Trial] = []
    for number, sweep in enumerate(_list(f"{source}: sweeps", declared["sweeps"], dict), start=1):
        where = f"{source}, sweep {number}"
        _check_keys(where, sweep, SWEEP_KEYS)
        pretrained = sweep.get("pretrained", False)
        if not isinstance(pretrained, bool):
            raise ValueError(f"{where}: pretrained must be True or False, got {pretrained!r}")
        config = make_config({**base_options, **(sweep.get("options") or {})})
        sweep_models = _list(f"{where}: models", sweep.get("models", []), str)
        for model in sweep_models:
            catalog.configuration(model, pretrained=pretrained)
            catalog.check_image_size(model, config.image_size)
        sweep_tiers = _list(f"{where}: tiers", sweep.get("tiers", []), str)
        for tier in sweep_tiers:
            if tier not in tiers:
                raise ValueError(
                    f"{where}: unknown tier {tier!r}; valid tiers: {', '.join(tiers)} (add custom ones under 'tiers')"
                )
        for seed in _list(f"{where}: seeds", sweep.get("seeds", seeds), int):
            for tier in sweep_tiers:
                for model in sweep_models:
                    trials.append(Trial(model, tier, pretrained=pretrained, seed=seed, config=config))
    ids = [t.trial_id for t in trials]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"{source} declares these trials more than once: {repeated}")
    name = declared.get("name") or Path(source).stem
    return Grid(name=name, data=declared.get("data"), tiers=tiers, trials=tuple(trials))


def load_grid(path: str | Path) -> Grid:
    """Read a grid file (it only declares data: nothing starts Ray or trains) and expand it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"grid file {str(path)!r} does not exist; see grids/ for examples")
    try:  # a grid file is Python, run as it is: run only grids you trust
        namespace = runpy.run_path(str(path))
    except Exception as error:  # a syntax error, an import error, anything the file raises: one line, its cause
        raise ValueError(f"grid file {str(path)!r} failed to load: {type(error).__name__}: {error}") from None
    if "GRID" not in namespace:
        raise ValueError(f"grid file {str(path)!r} defines no GRID dict")
    if not isinstance(namespace["GRID"], dict):
        raise ValueError(f"grid file {str(path)!r}: GRID must be a dict, got {type(namespace['GRID']).__name__}")
    declared = {"name": path.stem, **namespace["GRID"]}
    return expand(declared, source=str(path))
