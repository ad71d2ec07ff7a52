"""`python -m raybench.report results/<name>`: read a results folder, build the report, write it (the only writing)."""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from raybench.data.cache import DEFAULT_CACHE_DIR
from raybench.report import conclusions
from raybench.report.conclusions import load_claims
from raybench.report.document import Report, build_report
from raybench.report.inputs import Results, read_results, read_thesis, select
from raybench.report.rendering import render_html, render_markdown

DESCRIPTION = "The thesis's chapter 5 redrawn from a run's Parquet results, beside the published numbers."


def _csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in ("trial_ids",) if c in frame.columns])


MARKER = ".raybench-report"  # written by write_report alone: a report.md anyone could have written is no proof
OWN_FILES = ("report.md", "report.html", "figures", "tables", MARKER)  # all a new report replaces


def check_out(out: Path) -> None:
    """Refuse to write into a folder that is neither empty nor an earlier report (its marker file), or that cannot be
    written (a file on its path, a read-only folder or mount)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).is_file())):
        raise ValueError(f"{out} exists and is not a raybench report folder (no {MARKER} in it); choose another --out")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"cannot write the report to {out}: {existing} is a file; choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):  # access(2) also says so of a read-only mount, even to root
        raise ValueError(f"cannot write the report to {out}: {existing} is not writable; choose another --out")


def damaged_file(folder: Path) -> Path | None:
    """The first Parquet file of a results folder that cannot be read whole, if any."""
    for path in [*sorted(folder.glob("*.parquet")), *sorted(folder.glob("parts/*.parquet"))]:
        try:
            pq.read_table(path)
        except (OSError, pa.ArrowException):
            return path
    return None


def write_report(report: Report, out: str | Path, *, dpi: int = 110) -> Path:
    """Write report.md, report.html, figures/*.png and tables/*.csv into `out`, replacing an earlier report there;
    a write that fails (a full disk, a folder made read-only meanwhile) is a ValueError naming the folder."""
    out = Path(out)
    check_out(out)
    try:
        return _write(report, out, dpi=dpi)
    except OSError as error:
        shutil.rmtree(out.with_name(f".{out.name}.tmp"), ignore_errors=True)
        reason = error.strerror or error
        raise ValueError(f"cannot write the report to {out} ({reason}); free space or choose another --out") from None


def _write(report: Report, out: Path, *, dpi: int) -> Path:
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "figures").mkdir(parents=True)
    (tmp / "tables").mkdir()
    for table in report.tables:
        _csv_frame(table.data).to_csv(tmp / "tables" / f"{table.key}.csv", index=False)
    for plot in report.plots:
        plot.figure.savefig(tmp / "figures" / f"{plot.key}.png", dpi=dpi)
        if plot.data is not None:
            _csv_frame(plot.data).to_csv(tmp / "tables" / f"{plot.key}.csv", index=False)
    (tmp / "report.md").write_text(render_markdown(report))
    (tmp / "report.html").write_text(render_html(report))
    (tmp / MARKER).write_text("a folder python -m raybench.report wrote; it replaces only its own files here\n")
    out.mkdir(parents=True, exist_ok=True)
    for name in OWN_FILES:  # only the report's own files: anything else the user keeps here stays
        old = out / name
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old.exists() or old.is_symlink():
            old.unlink()
        os.replace(tmp / name, old)
    tmp.rmdir()
    return out


def claim_files(results: Results, asked: list[str]) -> list[str]:
    """The --claims files, then the run's grid file when it is unchanged since the run and declares CLAIMS."""
    files = list(asked)
    for run in results.runs[-1:]:
        grid_file = Path(run["grid_file"]) if run.get("grid_file") else None
        if grid_file is None or str(grid_file) in files or not grid_file.is_file():
            continue
        text = grid_file.read_bytes()
        if hashlib.sha256(text).hexdigest() == run.get("grid_sha256") and b"CLAIMS" in text:
            files.append(str(grid_file))
    return files


def refuse(parser: argparse.ArgumentParser, error: Exception) -> int:
    """One line, without argparse's usage before it (which would push it out of sight), and exit code 2."""
    line = str(error).splitlines()[0] if str(error) else type(error).__name__
    print(f"{parser.prog}: error: {line}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raybench.report", description=DESCRIPTION)
    parser.add_argument("results", help="a results folder (results/<name>, or the --out of python -m raybench.train)")
    parser.add_argument(
        "--models",
        nargs="+",
        default=[],
        metavar="NAME",
        help="only these models or architectures (e.g. resnet_18 MobileNetV3)",
    )
    parser.add_argument("--tiers", nargs="+", default=[], metavar="TIER", help="only these tiers (e.g. tiny small)")
    parser.add_argument(
        "--all-configurations",
        action="store_true",
        help="also list the thesis's configurations this run did not run or plan (as missing) in tables and figures",
    )
    parser.add_argument("--out", help="report folder (default: RESULTS/report)")
    parser.add_argument(
        "--claims",
        action="append",
        default=[],
        metavar="FILE",
        help="a Python file declaring CLAIMS (raybench.report.conclusions.Claim) to test beside the thesis's; "
        "the run's own grid file is read for CLAIMS without asking (repeatable)",
    )
    parser.add_argument(
        "--cache",
        default=str(DEFAULT_CACHE_DIR),
        help="the decode-once image cache the trials read, for figure 4.3 (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out = Path(args.out) if args.out else Path(args.results) / "report"
    try:
        try:
            read = read_results(args.results)
        except (OSError, pa.ArrowException) as error:  # a file cut or overwritten past what `readable` checks
            damaged, cause = damaged_file(Path(args.results)), f"{type(error).__name__}: {error}".splitlines()[0]
            if damaged is None:
                raise ValueError(f"cannot read the results in {args.results} ({cause})") from None
            raise ValueError(
                f"{damaged} is damaged ({cause}): restore it from a copy, or delete it "
                "(the report then reads parts/ where it can)"
            ) from None
        results, thesis = select(read, read_thesis(), models=args.models, tiers=args.tiers)
        check_out(out)
        claims = conclusions.CLAIMS + tuple(c for path in claim_files(results, args.claims) for c in load_claims(path))
    except ValueError as error:
        return refuse(parser, error)
    chosen = (("models", args.models), ("tiers", args.tiers))
    filters = "; ".join(f"{name}: {' '.join(values)}" for name, values in chosen if values)
    filters = f" (filtered to {filters})" if filters else ""
    report = build_report(
        results,
        thesis,
        tiers=args.tiers,
        filters=filters,
        all_configurations=args.all_configurations,
        claims=claims,
        cache_dir=args.cache,
    )
    try:
        write_report(report, out)
    except ValueError as error:
        return refuse(parser, error)
    seconds = time.perf_counter() - started
    print(f"{len(report.tables)} tables, {len(report.plots)} figures in {seconds:.1f}s -> {out / 'report.html'}")
    return 0
