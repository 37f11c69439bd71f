"""`./dev`, the README's entry point: `--help` is help (exit 0), an unknown command is an error (exit 2)."""

from __future__ import annotations

import subprocess

from tests.support.paths import REPO_ROOT

DEV = REPO_ROOT / "dev"


def test_help_exits_zero_and_names_the_commands() -> None:
    for args in (["--help"], ["-h"], ["help"], []):
        out = subprocess.run([str(DEV), *args], capture_output=True, text=True)
        assert out.returncode == 0, (args, out.stderr)
        assert "./dev demo" in out.stdout and "./dev test" in out.stdout


def test_an_unknown_command_is_an_error_naming_it() -> None:
    out = subprocess.run([str(DEV), "tset"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown command: tset" in out.stderr
