"""The command line: `python -m raybench.data download DEST` fetches, checks and unpacks the full dataset;
`python -m raybench.data prepare [DATA]` validates the images, draws the tiers and prints the report;
`python -m raybench.data masks DATA --out FILE.png` draws the masks of the cell at the centre (input="..._mask",
§7.2) on 2 images a class and measures on every image how often the mask is that cell.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from raybench.data.preparation import prepare
from raybench.data.source import DOWNLOAD_DEADLINE_S, PBC_SHA256, PBC_URL, DownloadError, download, find_root
from raybench.data.validation import DataWarning


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m raybench.data", description="The PBC dataset: download or prepare it."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("download", help="fetch, check and unpack PBC_dataset_normal_DIB.zip (resumes)")
    get.add_argument("dest", help="folder to download into")
    get.add_argument(
        "--url", default=PBC_URL, help="where to fetch the zip from (default: Mendeley Data snkd93bnjr v1)"
    )
    get.add_argument(
        "--sha256",
        default=PBC_SHA256,
        help="the zip's expected SHA-256; a download that differs is deleted (default: %(default)s; None: unchecked)",
    )
    get.add_argument(
        "--deadline",
        type=float,
        metavar="SECONDS",
        help="give up (keeping what came, for the next call to resume) after this long, retries included "
        f"(default: $RAYBENCH_DOWNLOAD_DEADLINE_S, else {DOWNLOAD_DEADLINE_S:g})",
    )
    prep = commands.add_parser("prepare", help="validate the images, draw the tiers and print the report")
    prep.add_argument(
        "data", nargs="?", help="PBC_dataset_normal_DIB folder, its parent or the .zip (default: embedded sample)"
    )
    prep.add_argument(
        "--split-seed", type=int, default=0, help="the seed of the tiers' and splits' draw (default: %(default)s)"
    )
    prep.add_argument("--seed", type=int, dest="split_seed", help=argparse.SUPPRESS)  # its former name
    masks = commands.add_parser(
        "masks", help="outline the masks of the cell at the centre on 2 images a class; measure them on every image"
    )
    masks.add_argument("data", help="PBC_dataset_normal_DIB folder, its parent or the .zip")
    masks.add_argument("--out", required=True, help="the figure to write (.png)")
    masks.add_argument("--seed", type=int, default=0, help="which images the figure draws (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            print(f"dataset ready at {download(args.dest, url=args.url, sha256=args.sha256, deadline_s=args.deadline)}")
        elif args.command == "masks":
            check_masks(find_root(args.data), Path(args.out), seed=args.seed)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DataWarning)  # the report lists every skipped and dropped file
                print(prepare(args.data, seed=args.split_seed).report)
    except (ValueError, DownloadError, OSError) as error:  # one line, as argparse reports a bad argument
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    return 0


def check_masks(root: Path, out: Path, *, seed: int) -> None:
    """Measure every image's mask, print the shares per class, draw the figure to `out`."""
    from raybench.data import mask_check  # matplotlib, only for this command

    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must be a .png file, got {str(out)!r}")
    table = mask_check.measure(root)
    out.parent.mkdir(parents=True, exist_ok=True)
    mask_check.draw(root, table, seed=seed).savefig(out, dpi=90)
    print(
        f"masks of the cell at the centre in {root}: the mask covers the image centre and is at most "
        f"{mask_check.MOST_OF_THE_FRAME:.0%} of the 352x352 crop (so not empty)"
    )
    print(f"{'class':<14}{'images':>8}{'covers centre':>15}{'is the cell':>13}{'median share':>14}")
    for row in mask_check.shares(table).itertuples():
        print(
            f"{row.class_name:<14}{row.images:>8}{row.covers_centre:>15.1%}{row.is_cell:>13.1%}{row.median_share:>14.1%}"
        )
    for row in table[table.error.notna()].itertuples():
        print(f"skipped {row.image}: {row.error}")
    print(f"figure: {out}")


if __name__ == "__main__":
    sys.exit(main())
