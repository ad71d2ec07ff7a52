"""The `raybench` command (raybench/__main__.py): each subcommand is its module's command line, with the same
arguments and exit codes."""

import subprocess
import sys

from raybench import __main__ as command


def test_version_and_usage(capsys):
    assert command.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("raybench ")
    assert command.main([]) == 2
    assert "run,train,report,data" in capsys.readouterr().out


def test_an_unknown_command_is_one_line(capsys):
    assert command.main(["tune"]) == 2
    assert capsys.readouterr().err.strip() == "raybench: unknown command 'tune'; commands: run, train, report, data"


def test_a_subcommand_gets_its_arguments_and_gives_its_exit_code(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "raybench", "report", str(tmp_path / "nothing")], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "raybench", "run", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--dry-run" in proc.stdout
