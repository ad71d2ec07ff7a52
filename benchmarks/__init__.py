"""raybench's benchmark suite: ratios measured side by side in one run, never timed tests.

    python benchmarks/run_all.py [--quick] [--gpu | --gpu-dry-run]      # or: python -m benchmarks ...

Each module measures one thing and returns rows for the table (see common.Row); run_all.py writes
benchmarks/results/<date>-<host>.json and .md.
"""
