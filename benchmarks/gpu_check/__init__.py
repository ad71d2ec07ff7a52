"""The GPU check: everything raybench's GPU path must show, in one call of under 9 minutes on one H100/H200.

`python -m benchmarks.gpu_check --out DIR` runs six stages, each in its own process under its own time box, so
that one stage failing or hanging costs only its box: (a) the environment, (b) compiled steps against eager ones
on a small model (numbers, resume, trials in one process, a forced out-of-memory), (c) the compile cost of one
large model at thesis size, (d) a real `python -m raybench.run` through Ray Tune over every configuration on the
tiny tier (a forced out-of-memory, a trial killed and resumed, the report, the outside check), (e) the step
benchmark (every configuration eager beside a bare loop, then bf16 and compiled steps as time allows, the thesis
grid's projected hours), (f) MPS: sharing with and without it. Each writes DIR/STAGE.json and DIR/STAGE.log;
DIR/summary.md says pass, fail or not reached for each. Without a GPU (or with `--cpu`) the same code runs at
tiny sizes in about 3 minutes (tests/test_gpu_check.py runs it); its numbers then mean nothing.
"""
