"""The thesis's chapter 5 redrawn from a run's Parquet results, beside the published numbers.

`python -m raybench.report results/<name>` writes results/<name>/report/: report.md and report.html with
the figures as PNG files (figures/), and every table as CSV (tables/). Tables keep the thesis's numbers
(5.1-5.17); each of our numbers stands beside the thesis's and the difference.

inputs reads a results folder (through raybench.results) and the thesis's numbers (raybench.catalog);
statistics, comparison, tables and figures are pure functions from DataFrames to tables and matplotlib
figures; document chooses the blocks and rendering turns them into Markdown and HTML; only cli writes files.
Nothing here imports torch or Ray.
"""

from raybench.report.cli import check_out, main, write_report
from raybench.report.comparison import (
    best_per_architecture,
    compare_with_thesis,
    configurations,
    map_comparison,
    map_curves,
    maps_without_logits,
    pretrained_ratios,
    trial_status,
)
from raybench.report.document import Report, build_report
from raybench.report.inputs import Results, Thesis, expand_models, read_results, read_thesis, select
from raybench.report.rendering import render_html, render_markdown
from raybench.report.statistics import mean_interval, t_quantile, wilson_interval
from raybench.report.tables import (
    Table,
    architecture_table,
    change_table,
    instability_table,
    leaderboard,
    leaderboard_table,
    map_table,
    tier_table,
    trials_table,
)

__all__ = [
    "Report",
    "Results",
    "Table",
    "Thesis",
    "architecture_table",
    "best_per_architecture",
    "build_report",
    "change_table",
    "check_out",
    "compare_with_thesis",
    "configurations",
    "expand_models",
    "instability_table",
    "leaderboard",
    "leaderboard_table",
    "main",
    "map_comparison",
    "map_curves",
    "map_table",
    "maps_without_logits",
    "mean_interval",
    "pretrained_ratios",
    "read_results",
    "read_thesis",
    "render_html",
    "render_markdown",
    "select",
    "t_quantile",
    "tier_table",
    "trial_status",
    "trials_table",
    "wilson_interval",
    "write_report",
]
