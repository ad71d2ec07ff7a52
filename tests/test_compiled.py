"""Compiled steps (raybench.compiled, as loop.Trainer uses them): the failures a GPU would meet first, on the CPU.

Dynamo's "eager" backend traces for real (guards, recompile limits, failures) without Inductor's C++ build, so
these run in seconds; the numbers of Inductor-compiled steps are checked in test_train and benchmarks/gpu_check.
"""

import numpy as np
import pytest
import torch

from raybench import batches, catalog, compiled, loop, models, spec
from raybench import trial as lifecycle


def dynamo_eager(step):
    return torch.compile(step, backend="eager", dynamic=False)


def make_trainer(*, step="compiled", compiler=dynamo_eager, n_train=36, **options):
    """lenet5 at 32x32, batches of 8: 36 training images end in a short batch of 4, 12 validation ones too."""
    config = spec.TrainConfig(image_size=32, device="cpu", step=step, es_start=1, es_patience=3, **options)
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (n_train + 12, 32, 32), dtype=np.uint8), rng.integers(0, 8, n_train + 12)
    loop.seed_everything(0)
    model = models.build_model("lenet5", image_size=32)

    def split(a, b):
        return batches.DeviceSplit(a, b, channels=catalog.configuration("lenet5").channels, device=torch.device("cpu"))

    train, val = split(x[:n_train], y[:n_train]), split(x[n_train:], y[n_train:])
    return loop.Trainer(model, train, val, config, seed=0, batch_size=8, compiler=compiler)


def numbers(trainer):
    return [r[key] for r in trainer.history for key in ("train_loss", "val_loss", "val_accuracy", "lr")]


def test_auto_runs_eager_steps():
    trainer = make_trainer(step="auto")
    assert not trainer.compiled and trainer.step_ran == "eager" and trainer.train_step is loop.train_step


class Replayed:
    """A step whose outputs live in one persistent buffer, overwritten by every call, as a CUDA graph's replay is."""

    def __init__(self, step):
        self.step, self.buffers = step, None

    def __call__(self, *args):
        out = self.step(*args)
        outs = out if isinstance(out, tuple) else (out,)
        if self.buffers is None or any(b.shape != o.shape for b, o in zip(self.buffers, outs, strict=True)):
            self.buffers = tuple(torch.empty_like(o) for o in outs)
        for buffer, o in zip(self.buffers, outs, strict=True):
            buffer.copy_(o)
        return self.buffers if isinstance(out, tuple) else self.buffers[0]


def test_what_the_loop_keeps_survives_a_step_that_overwrites_its_outputs():
    plain, replayed = make_trainer(step="eager", max_epochs=2), make_trainer(step="eager", max_epochs=2)
    replayed.train_step, replayed.eval_step = Replayed(loop.train_step), Replayed(loop.eval_step)
    loop.fit(plain)
    loop.fit(replayed)
    assert numbers(replayed) == numbers(plain)
    kept = [loop.evaluate(t.model, t.val.batches(8), keep_logits=True, step=t.eval_step)[2] for t in (plain, replayed)]
    assert torch.equal(kept[0], kept[1])


def test_a_compiled_step_runs_full_batches_compiled_and_the_short_last_one_eager():
    trainer = make_trainer(max_epochs=2)
    loop.fit(trainer)
    assert trainer.train_step.calls == 2 * 4 and trainer.eval_step.calls == 2 * 1  # 36 = 4 x 8 + 4; 12 = 8 + 4
    assert trainer.step_ran == "compiled" and trainer.step_failure == ""
    first, second = trainer.history
    assert first["compile_seconds"] > 0 and second["compile_seconds"] == 0
    assert trainer.compile_seconds == pytest.approx(first["compile_seconds"])
    eager = make_trainer(step="eager", max_epochs=2)
    loop.fit(eager)
    # the same kernels; the rate a float64 tensor rounds the update differently in the last bits
    assert numbers(trainer) == pytest.approx(numbers(eager), rel=1e-5)


def failing_backend(graph, example_inputs):
    raise RuntimeError("ptxas fatal: no GPU toolchain here")


def test_a_failing_compile_falls_back_to_eager_with_one_line_and_the_reason(capsys):
    def failing(step):
        return torch.compile(step, backend=failing_backend, dynamic=False)

    trainer, eager = make_trainer(compiler=failing, max_epochs=2), make_trainer(step="eager", max_epochs=2)
    loop.fit(trainer)
    loop.fit(eager)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("raybench: the compiled")]
    assert len(lines) == 2  # one for each step, once each
    assert "ptxas fatal: no GPU toolchain here" in lines[0]
    assert trainer.step_ran == "eager" and "ptxas fatal" in trainer.step_failure
    assert numbers(trainer) == numbers(eager)  # the failure came before the step ran: nothing was half-applied


def test_many_compiled_trials_in_one_process_all_compile():
    # one process running trial after trial (Ray's reused actors): past Dynamo's recompile limit (8) they would
    # run eager while claiming to be compiled; with fail_on_recompile_limit_hit they would say so
    ran = []
    for _ in range(torch._dynamo.config.recompile_limit + 2):
        trainer = make_trainer(max_epochs=1, n_train=16)
        loop.fit(trainer)
        ran.append((trainer.step_ran, trainer.step_failure, trainer.train_step.calls))
    assert ran == [("compiled", "", 2)] * len(ran)


def test_the_recompile_limit_raises_instead_of_running_eager_unseen():
    def scaled(scale, x, y, precision):
        return x * scale

    compiled.reset_compiler(compile_threads=1)
    step = compiled.CompiledStep(scaled, batch_size=8, compiler=dynamo_eager, name="evaluation step")
    x = torch.ones(8)
    outputs = [step(scale, x, None, "fp32") for scale in range(torch._dynamo.config.recompile_limit + 2)]
    assert step.ran == "eager" and "recompile" in step.failure.lower()  # each int is a new graph, up to the limit
    assert [float(o[0]) for o in outputs] == list(range(len(outputs)))  # and the eager step took over


def test_a_resumed_compiled_trial_keeps_its_rate_a_device_float64_tensor(tmp_path):
    trainer = make_trainer(max_epochs=1)
    loop.fit(trainer)
    trainer.save(tmp_path / "state.pt")
    resumed = make_trainer(max_epochs=2)
    lr_before = resumed.optimizer.param_groups[0]["lr"]
    resumed.load(tmp_path / "state.pt")
    lr = resumed.optimizer.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.dtype == torch.float64 and lr.device == resumed.device
    assert lr is not lr_before and float(lr) == float(trainer.optimizer.param_groups[0]["lr"])
    loop.fit(resumed)
    assert resumed.step_ran == "compiled" and resumed.epoch == 2


def test_out_of_memory_under_compiled_steps_tries_eager_steps_at_the_same_batch_first(capsys):
    built = []

    def build(batch_size, step=None):
        built.append((batch_size, step))
        return make_trainer(step=step or "compiled", max_epochs=1, n_train=16)

    def on_epoch_end(row, trainer, start):
        if trainer.compiled:  # a capture that holds its cached blocks: out of memory where eager fits
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    trainer = lifecycle.fit_halving_on_oom(build, batch_size=8, on_epoch_end=on_epoch_end, label="t")
    assert built == [(8, None), (8, "eager")] and trainer.batch_size == 8 and trainer.epoch == 1
    assert trainer.step_ran == "eager" and "out of memory under compiled steps" in trainer.step_failure
    assert "t: CUDA out of memory under compiled steps at batch size 8" in capsys.readouterr().out
