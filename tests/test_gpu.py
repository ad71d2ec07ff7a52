"""Checks that need a CUDA GPU; skipped without one (their output on a GPU goes to benchmarks/results/)."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from raybench import batches, loop, models, mps, spec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def trainer(step: str, precision: str = "fp32") -> loop.Trainer:
    config = spec.TrainConfig(image_size=64, es_start=1, es_patience=3, es_min_delta=0.0, max_epochs=3, step=step,
                              precision=precision, device="cuda")  # fmt: skip
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (320, 64, 64), dtype=np.uint8), rng.integers(0, 8, 320)
    loop.seed_everything(0)
    loop.set_precision(precision, torch.device("cuda"))
    model = models.build_model("resnet_18", image_size=64).cuda()

    def split(a, b):
        return batches.DeviceSplit(a, b, channels=3, device=torch.device("cuda"))

    return loop.Trainer(model, split(x[:256], y[:256]), split(x[256:], y[256:]), config, seed=0, batch_size=32)


@pytest.mark.parametrize("precision, rel", [("fp32", 2e-3), ("bf16", 3e-2)])
def test_cuda_graphs_give_the_numbers_of_eager_steps_within_tolerance(precision, rel):
    """Stated tolerance: per-epoch losses within 0.2 % in fp32 (TF32 convolutions, cuDNN's autotuned kernels
    differ from run to run) and 3 % in bf16, the learning rates identical."""
    eager, graphed = trainer("eager", precision), trainer("compiled", precision)
    assert graphed.compiled and graphed.eval_batch_size == 128
    loop.fit(eager)
    loop.fit(graphed)
    for a, b in zip(eager.history, graphed.history, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=rel)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=rel)
        assert b["lr"] == a["lr"]


def test_precision_sets_the_float32_modes():
    loop.set_precision("fp32", torch.device("cuda"))
    assert torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    loop.set_precision("tf32", torch.device("cuda"))
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    loop.set_precision("fp32", torch.device("cuda"))


@pytest.mark.skipif(shutil.which(mps.CONTROL) is None, reason="needs NVIDIA MPS")
def test_two_processes_share_the_gpu_under_mps():
    state = mps.ensure()
    try:
        assert state.active, state.reason
        code = "import torch; x = torch.randn(4096, 4096, device='cuda'); print(float((x @ x).sum()) != 0)"
        procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
        assert [p.communicate(timeout=120)[0].strip() for p in procs] == ["True", "True"]
    finally:
        mps.stop(state)
