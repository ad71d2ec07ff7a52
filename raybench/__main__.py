"""The `raybench` command: `raybench run GRID`, `raybench train ...`, `raybench report RESULTS`, `raybench data ...`.

Each subcommand is the module `python -m raybench.<subcommand>` runs, with the same arguments; it is imported only
when asked for, so that `raybench report` never loads torch or Ray.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys

COMMANDS = {
    "run": ("raybench.service.cli", "run a grid of trials with Ray Tune (grids/thesis.py, grids/quickstart.py, ...)"),
    "train": ("raybench.train", "train one trial in this process, without Ray"),
    "report": ("raybench.report.cli", "the thesis's tables and figures for a results folder, ours beside theirs"),
    "data": ("raybench.data.__main__", "download the PBC dataset, or prepare and check it"),
}


def version() -> str:
    try:
        return importlib.metadata.version("raybench")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown (not installed)"


def usage() -> str:
    lines = ["usage: raybench {run,train,report,data} ... (raybench COMMAND --help for its options)", ""]
    lines += [f"  {name:<7} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join([*lines, "", "  --version  print raybench's version"])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] == "--version":
        print(f"raybench {version()}")
        return 0
    if args[0] not in COMMANDS:
        print(f"raybench: unknown command {args[0]!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    return module.main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
