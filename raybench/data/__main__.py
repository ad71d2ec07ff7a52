"""The command line: `python -m raybench.data download DEST` fetches, checks and unpacks the full dataset;
`python -m raybench.data prepare [DATA]` validates the images, draws the tiers and prints the report.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from raybench.data.preparation import prepare
from raybench.data.source import PBC_SHA256, PBC_URL, DownloadError, download
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
    prep = commands.add_parser("prepare", help="validate the images, draw the tiers and print the report")
    prep.add_argument(
        "data", nargs="?", help="PBC_dataset_normal_DIB folder, its parent or the .zip (default: embedded sample)"
    )
    prep.add_argument(
        "--split-seed", type=int, default=0, help="the seed of the tiers' and splits' draw (default: %(default)s)"
    )
    prep.add_argument("--seed", type=int, dest="split_seed", help=argparse.SUPPRESS)  # its former name
    args = parser.parse_args(argv)
    try:
        if args.command == "download":
            print(f"dataset ready at {download(args.dest, url=args.url, sha256=args.sha256)}")
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DataWarning)  # the report lists every skipped and dropped file
                print(prepare(args.data, seed=args.split_seed).report)
    except (ValueError, DownloadError, OSError) as error:  # one line, as argparse reports a bad argument
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
