"""Grid files: experiments declared as Python data, loaded, validated and expanded into trials (no torch, no Ray).

A grid file defines `GRID`, a dict:

    GRID = {
        "name": "thesis",                      # default results folder name
        "data": None,                          # dataset path; None = the embedded 400-image sample
        "tiers": {"tiny": 400, ...},           # optional: custom tier sizes (default: thesis table 4.1)
        "seeds": [0],                          # every sweep is run once per seed
        "options": {"max_epochs": 100},        # TrainConfig options for every trial
        "models": {"my_net": {...}},           # optional: the grid's own models (below)
        "sweeps": [                            # each sweep is models x tiers
            {"models": [...], "tiers": ["large", "medium", "small", "tiny"]},
            {"models": [...], "tiers": ["tiny"], "pretrained": True, "options": {...}},
            {"models": [...], "tiers": ["tiny"], "label": "adamw", "options": {"optimizer": "adamw"}},
            {"models": [...], "tiers": ["small"], "label": "pbc",
             "init_from": "results/x/weights/{model}-large-seed{seed}.npz"},
        ],
    }

A sweep's `label` names what it changes: its trials are "MODEL-TIER-LABEL-seedN", compared in the report with the
unlabelled (baseline) trials of the same model and tier. `save_weights: True` keeps each trial's tested weights in
RESULTS/NAME/weights/TRIAL_ID.npz; `init_from` starts each trial from such a file ({model}, {tier} and {seed} are
filled in; relative paths are taken from the folder the run starts in) and trains the whole network from there.

A grid's own models (`models`, or a `MODELS` dict beside GRID) are used in sweeps like any other:

    MODELS = {"my_net": {"builder": "my_module:build", "batch_size": 32, "architecture": "Mine", "channels": 3}}

`builder` is "module:function", imported only where a trial is built (the grid file's folder is put on sys.path
there) and called as function(num_classes=8, image_size=352) -> torch.nn.Module; `batch_size` is required;
`architecture` (default: the name), `channels` (1 or 3, default 3), `activation_mb` (MB autograd keeps per 352x352
training image, for the GPU share: benchmarks/activation_memory.py measures it; default 100) and `patch_size` (image
sizes must be multiples of it) are optional.
"""

from __future__ import annotations

import dataclasses
import re
import runpy
import string
from pathlib import Path

from raybench import catalog
from raybench.spec import INT_MAX, NAME, RUN_NAME, Trial, check_name, make_config

GRID_KEYS = ("name", "data", "tiers", "seeds", "options", "models", "sweeps")
SWEEP_KEYS = ("models", "tiers", "pretrained", "seeds", "options", "label", "init_from", "save_weights")
MODEL_KEYS = ("builder", "batch_size", "architecture", "channels", "activation_mb", "patch_size")
OWN_ACTIVATION_MB = 100.0  # a grid's own model without a measured figure: between ResNet-34's and ResNet-50's
BUILDER = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
TEMPLATE_FIELDS = ("model", "tier", "seed")


@dataclasses.dataclass(frozen=True)
class Grid:
    """A validated grid: its name, data source, tier sizes and the expanded list of trials."""

    name: str
    data: str | None
    tiers: dict[str, int | None]
    trials: tuple[Trial, ...]
    models: tuple[catalog.Configuration, ...] = ()  # the grid's own models, which every trial process must know

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


def own_models(declared, *, source: str, folder: str | None = None) -> tuple[catalog.Configuration, ...]:
    """A grid's `models` as catalog records (validated, not imported: that happens where a trial is built)."""
    if not isinstance(declared, dict):
        raise ValueError(
            f"{source}: models (MODELS, a grid's own models) must be a dict of name -> "
            f"{{'builder': 'module:function', 'batch_size': N, ...}}, got {type(declared).__name__}"
        )
    configs = []
    for name, fields in declared.items():
        where = f"{source}: model {name!r}"
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ValueError(f"{where}: a model name is letters, digits and '_'")
        _check_keys(where, fields, MODEL_KEYS)
        builder = fields.get("builder")
        if not isinstance(builder, str) or not BUILDER.fullmatch(builder):
            raise ValueError(f"{where}: builder must be an import path 'module:function', got {builder!r}")
        batch_size = fields.get("batch_size")
        if not catalog.is_whole(batch_size):
            raise ValueError(f"{where}: batch_size must be a whole number from 1 to {INT_MAX}, got {batch_size!r}")
        channels, patch = fields.get("channels", 3), fields.get("patch_size")
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ValueError(f"{where}: channels must be 1 (grey) or 3 (grey replicated, or colour), got {channels!r}")
        if patch is not None and not catalog.is_whole(patch):
            raise ValueError(f"{where}: patch_size must be a whole number from 1 to {INT_MAX}, got {patch!r}")
        activation = fields.get("activation_mb", OWN_ACTIVATION_MB)
        if isinstance(activation, bool) or not isinstance(activation, (int, float)) or not activation > 0:
            raise ValueError(f"{where}: activation_mb must be a number above 0, got {activation!r}")
        architecture = fields.get("architecture", name)
        if not isinstance(architecture, str) or not architecture:
            raise ValueError(f"{where}: architecture must be a name, got {architecture!r}")
        configs.append(
            catalog.Configuration(
                name,
                architecture,
                builder,
                float(activation),
                channels=channels,
                patch_size=patch,
                chosen_batch_size=batch_size,
                builder_path=folder,
            )
        )
    use_models(configs)
    return tuple(configs)


def use_models(configs) -> None:
    """Make a grid's own models known in this process (the driver, and each trial process before it trains)."""
    for config in configs:
        catalog.register(config)


def _init_from(where: str, template, *, model: str, tier: str, seed: int) -> str:
    """A sweep's init_from for one trial: its fields filled in, the path made absolute (a trial runs elsewhere)."""
    if not isinstance(template, str) or not template:
        raise ValueError(f"{where}: init_from must be a path (with {{model}}, {{tier}}, {{seed}}), got {template!r}")
    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    if fields - set(TEMPLATE_FIELDS):
        raise ValueError(
            f"{where}: init_from {template!r} uses {sorted(fields - set(TEMPLATE_FIELDS))}; "
            f"it may use {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}"
        )
    return str(Path(template.format(model=model, tier=tier, seed=seed)).expanduser().resolve())


def expand(declared: dict, *, source: str = "grid", folder: str | None = None) -> Grid:
    """Validate a grid dict and expand it into trials; every problem is a ValueError naming the value.

    `folder` is where the grid's own models' modules are (the grid file's folder)."""
    _check_keys(source, declared, GRID_KEYS)
    if "sweeps" not in declared:
        raise ValueError(f"{source} has no 'sweeps': list the models and tiers to train")
    models = own_models(declared["models"], source=source, folder=folder) if "models" in declared else ()
    tiers = dict(declared.get("tiers") or catalog.TIERS)
    for tier, size in tiers.items():
        check_name(f"{source}: tier", tier)
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 10 <= size <= INT_MAX):
            raise ValueError(
                f"{source}: tier {tier!r} needs a size of at least 10 images and at most {INT_MAX} "
                f"(or None for all), got {size!r}"
            )
    base_options = declared.get("options") or {}
    make_config(base_options)  # unknown keys and bad values fail here, naming the key
    seeds = _list(f"{source}: seeds", declared.get("seeds", [0]), int)
    trials: list[Trial] = []
    for number, sweep in enumerate(_list(f"{source}: sweeps", declared["sweeps"], dict), start=1):
        where = f"{source}, sweep {number}"
        _check_keys(where, sweep, SWEEP_KEYS)
        pretrained, save_weights = sweep.get("pretrained", False), sweep.get("save_weights", False)
        for key, value in (("pretrained", pretrained), ("save_weights", save_weights)):
            if not isinstance(value, bool):
                raise ValueError(f"{where}: {key} must be True or False, got {value!r}")
        label = sweep.get("label", "")
        if not isinstance(label, str) or (label and not NAME.fullmatch(label)):
            raise ValueError(f"{where}: label must be letters, digits and '_' (it is part of trial ids), got {label!r}")
        if pretrained and "init_from" in sweep:
            raise ValueError(f"{where}: a trial starts from ImageNet (pretrained) or from init_from, not both")
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
                    start = ""
                    if "init_from" in sweep:
                        start = _init_from(where, sweep["init_from"], model=model, tier=tier, seed=seed)
                    trials.append(
                        Trial(
                            model,
                            tier,
                            pretrained=pretrained,
                            seed=seed,
                            config=config,
                            variant=label,
                            init_from=start,
                            save_weights=save_weights,
                        )
                    )
    ids = [t.trial_id for t in trials]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(
            f"{source} declares these trials more than once: {repeated}; "
            "give sweeps that change options or the start different 'label's"
        )
    name = check_name(f"{source}: the grid's name", declared.get("name") or Path(source).stem, pattern=RUN_NAME)
    return Grid(name=name, data=declared.get("data"), tiers=tiers, trials=tuple(trials), models=models)


def load_grid(path: str | Path) -> Grid:
    """Read a grid file (it only declares data: nothing starts Ray or trains) and expand it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"grid file {str(path)!r} does not exist; see grids/ for examples")
    try:  # a grid file is Python, run as it is: run only grids you trust
        namespace = runpy.run_path(str(path))
    except Exception as error:  # a syntax error, an import error, anything the file raises: one line, its cause
        raise ValueError(f"grid file {str(path)!r} failed to load: {type(error).__name__}: {error}") from None
    except SystemExit as exit_:  # it would end the command without a word
        raise ValueError(
            f"grid file {str(path)!r} called sys.exit({exit_.code!r}) while it was loaded: "
            "a grid file only declares GRID; remove the exit"
        ) from None
    if "GRID" not in namespace:
        raise ValueError(f"grid file {str(path)!r} defines no GRID dict")
    if not isinstance(namespace["GRID"], dict):
        raise ValueError(f"grid file {str(path)!r}: GRID must be a dict, got {type(namespace['GRID']).__name__}")
    declared = {"name": path.stem, **namespace["GRID"]}
    if "MODELS" in namespace:
        if "models" in declared:
            raise ValueError(f"grid file {str(path)!r} declares MODELS and GRID['models']: keep one")
        declared["models"] = namespace["MODELS"]
    return expand(declared, source=str(path), folder=str(path.resolve().parent))
