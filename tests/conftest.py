"""Fixtures and helpers shared by the test modules (the helpers imported as `from conftest import ...`)."""

import contextlib
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from raybench import batches, catalog, data, distributed, loop, models, results, spec

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32  # the image size of the loop's quick trainers


@pytest.fixture(scope="session")
def embedded() -> data.Prepared:
    """The embedded 400-image sample, prepared once with the default tiers (large and tiny) and seed 0."""
    return data.prepare(None)


@pytest.fixture(scope="session")
def decoded_cache(tmp_path_factory):
    """A decode-once cache folder shared by the whole test session."""
    return tmp_path_factory.mktemp("decoded")


def make_trainer(*, seed=0, model="lenet5", channels=None, batch_size=8, base_batch_size=None, group=None, **options):
    """A Trainer on 32 random 32x32 training images and 16 validation ones (grey, or colour with 3 channels)."""
    config = spec.TrainConfig(
        image_size=SIZE, device="cpu", **{"es_start": 1, "es_patience": 3, "es_min_delta": 0.0, **options}
    )
    channels = channels or catalog.configuration(model).channels
    rng = np.random.default_rng(1)
    shape = (48, 3, SIZE, SIZE) if config.input == "colour" else (48, SIZE, SIZE)
    x, y = rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 8, 48)
    loop.seed_everything(seed)
    net = models.build_model(model, image_size=SIZE, channels=channels)
    net = net if group is None else distributed.global_batchnorm(net)  # a data-parallel worker's (raybench.trial)

    def split(a, b):
        return batches.DeviceSplit(a, b, channels=channels, device=torch.device("cpu"))

    return loop.Trainer(
        net,
        split(x[:32], y[:32]),
        split(x[32:], y[32:]),
        config,
        seed=seed,
        batch_size=batch_size,
        base_batch_size=base_batch_size,
        group=group,
    )


def recorded(trainer):
    """Make `trainer` record the inputs and labels of its training and validation steps: {"train": [], "val": []}."""
    seen = {"train": [], "val": []}
    train_step, eval_step = trainer.train_step, trainer.eval_step

    def train(model, optimizer, x, y, precision):
        seen["train"].append((x.clone(), y.clone()))
        return train_step(model, optimizer, x, y, precision)

    def evaluate(model, x, y, precision):
        seen["val"].append((x.clone(), y.clone()))
        return eval_step(model, x, y, precision)

    trainer.train_step, trainer.eval_step = train, evaluate
    return seen


def losses(trainer, key="train_loss"):
    return [row[key] for row in trainer.history]


def make_dataset(parent: Path, per_class: int = 3) -> Path:
    """A small dataset in the official layout, from the first embedded images of each class."""
    root = parent / "PBC_dataset_normal_DIB"
    for name in data.CLASSES:
        (root / name).mkdir(parents=True)
        for source in sorted((data.EMBEDDED_DATA / name).glob("*.jpg"))[:per_class]:
            shutil.copy(source, root / name / source.name)
    return root


def dataset_with_duplicates(parent: Path, *, per_class: int = 10, copies: int = 6) -> Path:
    """`per_class` embedded images a class; basophil's first one `copies` more times, eosinophil's first also filed
    as a neutrophil."""
    root = make_dataset(parent, per_class=per_class)
    basophil = sorted((root / "basophil").glob("*.jpg"))[0]
    for i in range(copies):
        shutil.copy(basophil, root / "basophil" / f"ZZ_copy{i}.jpg")
    shutil.copy(sorted((root / "eosinophil").glob("*.jpg"))[0], root / "neutrophil" / "AA_cross.jpg")
    return root


@pytest.fixture
def server(monkeypatch):
    """A loopback HTTP server serving `state["payload"]` with Range support; `state["cut"]` halves the next body;
    `state["trickle"]` = (bytes, seconds) sends the body that many bytes at a time, that long apart."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    state = {"payload": b"", "cut": False, "ranges": [], "trickle": None}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/PBC.zip":
                self.send_error(404)
                return
            payload, asked = state["payload"], self.headers.get("Range")
            state["ranges"].append(asked)
            start = int(re.fullmatch(r"bytes=(\d+)-", asked).group(1)) if asked else 0
            if start >= len(payload) and asked:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(payload)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206 if asked else 200)
            if asked:
                self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
            self.send_header("Content-Length", str(len(payload) - start))
            self.end_headers()
            body = payload[start:]
            if state["cut"]:  # promise the whole body, send half, hang up
                state["cut"] = False
                body = body[: len(body) // 2]
                self.close_connection = True
            if not state["trickle"]:
                self.wfile.write(body)
                return
            size, pause = state["trickle"]
            try:
                for start in range(0, len(body), size):
                    self.wfile.write(body[start : start + size])
                    self.wfile.flush()
                    time.sleep(pause)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up
                pass

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{httpd.server_address[1]}/PBC.zip"
    yield state
    httpd.shutdown()
    httpd.server_close()


def trial_result(trial_id: str, *, status: str = "ok", epochs: int = 2, images: int = 3) -> results.TrialResult:
    """A finished (or failed) trial with `epochs` epoch rows and `images` test predictions."""
    trial = {"trial_id": trial_id, "model": "lenet5", "tier": "tiny", "pretrained": False, "seed": 0, "status": status}
    if status != "ok":
        return results.failed_result(trial, "RuntimeError: out of memory", [{"trial_id": trial_id, "epoch": 1}])
    rows = [{"trial_id": trial_id, "epoch": e, "val_loss": 1.0 / e, "improved": True} for e in range(1, epochs + 1)]
    labels = np.arange(images) % len(catalog.CLASSES)
    scores = np.eye(len(catalog.CLASSES))[labels]
    predictions = results.prediction_rows(trial_id, [f"img{i}.jpg" for i in range(images)], labels, scores)
    return results.TrialResult({**trial, "test_accuracy": 1.0}, rows, predictions)


def finished_result(trial_id="lenet5-tiny-seed0") -> results.TrialResult:
    """A finished trial's rows as its final checkpoint holds them: 3 epochs, no predictions."""
    epochs = [{"trial_id": trial_id, "epoch": e, "train_loss": 2.0 / e, "val_loss": 1.0 / e} for e in (1, 2, 3)]
    return results.TrialResult({"trial_id": trial_id, "model": "lenet5", "status": "ok", "epochs": 3}, epochs, [])


QUICK = {"image_size": 32, "max_epochs": 5, "es_start": 1, "es_patience": 2, "es_min_delta": 0.0}


def write_grid(path: Path, models, *, options=None, name="small", extra_sweeps=()):
    """A grid file of `models` on tiny, with the quick options (32 px, at most 5 epochs)."""
    grid = {
        "name": name,
        "options": {**QUICK, **(options or {})},
        "sweeps": [{"models": list(models), "tiers": ["tiny"]}, *extra_sweeps],
    }
    path.write_text(f"GRID = {grid!r}\n")
    return path


def run_cli(*args, cwd: Path, check=True, timeout=300, env=None):
    """`python -m raybench.run ARGS` in a subprocess with results and cache under `cwd`, on 2 CPUs."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [
        sys.executable,
        "-m",
        "raybench.run",
        *map(str, args),
        "--results",
        str(cwd / "results"),
        "--cache",
        str(cwd / "cache"),
        "--num-cpus",
        "2",
    ]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def read_results(out: Path) -> dict[str, pd.DataFrame]:
    """The consolidated trials, epochs, predictions and manifest of a results folder."""
    return {name: pd.read_parquet(out / f"{name}.parquet") for name in ("trials", "epochs", "predictions", "manifest")}


IS_ROOT = os.geteuid() == 0


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """A real tmpfs of `size` mounted at `folder` (needs root; skips otherwise), unmounted afterwards."""
    if not IS_ROOT:
        pytest.skip("mounting a small file system needs root")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@contextlib.contextmanager
def read_only(folder: Path, files: list[Path]):
    """`folder` holding copies of `files`, then made read-only for real: a read-only mount as root (root ignores
    file modes), mode 0555 otherwise."""
    if IS_ROOT:
        with small_disk(folder, "64m"):
            for file in files:
                shutil.copy(file, folder / file.name)
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
            yield folder
    else:
        folder.mkdir(parents=True)
        for file in files:
            shutil.copy(file, folder / file.name)
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)


def synthetic_results(out: Path, trials, *, seeds=None, n_test: int = 48, lr_steps: bool = True, rng_seed: int = 0):
    """A results folder for `trials` (spec.Trial; each with its own seed, or with each of `seeds`), synthesised
    through the real writers (plan, trials, epochs and predictions Parquet): each trial near the thesis's accuracy
    for its configuration (chance where it has none), the thesis's epoch count and time per epoch, consistent
    confusion matrices and logits, and a plateau schedule that divides the learning rate by 10 every 15 epochs
    (`lr_steps`; else it stays at 0.1)."""
    from raybench import results as results_

    published = {
        (r["model"], r["dataset"], r["pretrained"]): r for r in catalog.published_results()
    }  # the thesis's rows
    rng = np.random.default_rng(rng_seed)
    plan, written = [], []
    for base in trials:
        for seed in (base.seed,) if seeds is None else seeds:
            trial = spec.dataclasses.replace(base, seed=seed)
            columns = trial.columns()
            plan.append(columns)
            thesis = published.get((trial.model, trial.tier, trial.pretrained), {})
            target = float(np.clip(thesis.get("accuracy", 0.125) + rng.normal(0, 0.04), 0.05, 0.99))
            labels = np.arange(n_test) % len(catalog.CLASSES)
            right = rng.random(n_test) < target
            predicted = np.where(right, labels, (labels + rng.integers(1, 8, n_test)) % 8)
            logits = rng.normal(0, 1, (n_test, 8)).astype(np.float32)
            logits[np.arange(n_test), predicted] += 4
            scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            matrix = np.zeros((8, 8), dtype=np.int64)
            np.add.at(matrix, (labels, predicted), 1)
            epochs = int(thesis.get("epochs", 20))
            per_epoch = float(thesis.get("seconds_per_epoch", 1.0)) * float(rng.uniform(2, 6))
            curve = 2.1 * np.exp(-np.arange(epochs) / 8) + 0.3 + rng.normal(0, 0.05, epochs)
            tested = int(np.argmin(curve)) + 1
            best = np.minimum.accumulate(curve)
            rows = [
                {
                    "trial_id": trial.trial_id,
                    "epoch": e + 1,
                    "train_loss": float(curve[e] * 0.9),
                    "val_loss": float(curve[e]),
                    "val_accuracy": target,
                    "lr": 0.1 * (0.1 ** (e // 15) if lr_steps else 1.0),
                    "improved": bool(e == 0 or curve[e] < best[e - 1]),
                    "epoch_seconds": per_epoch,
                }
                for e in range(epochs)
            ]
            n_train = catalog.TIER_SPLITS[trial.tier][0]
            row = {
                **columns,
                "architecture": catalog.configuration(trial.model).architecture,
                "device": "cpu",
                "status": "ok",
                "epochs": epochs,
                "tested_epoch": tested,
                "stopped_early": epochs < trial.config.max_epochs,
                "train_seconds": per_epoch * epochs,
                "seconds_per_epoch": per_epoch,
                "test_accuracy": float((predicted == labels).mean()),
                "map_at_5": target,
                "map_at_100": target * 0.9,
                "confusion_matrix": matrix.tolist(),
                "classes_predicted": int((matrix.sum(0) > 0).sum()),
                "collapsed": bool((matrix.sum(0) > 0).sum() <= 2),
                "parameters": int(thesis.get("parameters", 1000)),
                "trainable_parameters": int(thesis.get("parameters", 1000)),
                "n_train": n_train,
                "n_val": catalog.TIER_SPLITS[trial.tier][1],
                "n_test": n_test,
            }
            images = [f"img{i}.jpg" for i in range(n_test)]
            predictions = results_.prediction_rows(trial.trial_id, images, labels, scores, logits=logits)
            written.append(results_.TrialResult(row, rows, predictions))
    import pandas as pd

    results_.write_plan(out, pd.DataFrame(plan))
    results_.write_results(out, written)
    return out


def refused(argv, capsys) -> str:
    """The one line `raybench run ARGV` refuses with (rc 2), checking it refused before Ray started."""
    import ray

    from raybench import run

    with pytest.raises(SystemExit) as exit_:
        run.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and not ray.is_initialized()
    return err.strip().splitlines()[-1]
