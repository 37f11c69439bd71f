"""Every `gpufabric` command line in docs/cli.md parses (its options exist: `--help` after them exits 0), and every
command it shows is run by a CLI test against a real controller."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from controller.cli import ALIASES, app
from tests.support.paths import REPO_ROOT

DOC = REPO_ROOT / "docs" / "cli.md"
CLI_TESTS = sorted(p for p in (REPO_ROOT / "tests" / "controller").rglob("test_*.py") if p.name != Path(__file__).name)


def documented_lines() -> list[list[str]]:
    """The `gpufabric ...` part of each line in the page's sh blocks (after a pipe, before a comment)."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S):
        for line in block.splitlines():
            start = line.find("gpufabric ")
            if start < 0:
                continue
            command = re.split(r"\s{2,}#", line[start:])[0]
            lines.append(shlex.split(command)[1:])
    return lines


def command_path(args: list[str]) -> tuple[str, ...]:
    """The sub-command names at the front of ``args`` (groups by their primary name)."""
    node: Any = typer.main.get_command(app)
    path: list[str] = []
    for arg in args:
        commands = getattr(node, "commands", {})  # typer's groups are not click.Group subclasses
        if arg not in commands:
            break
        path.append(ALIASES.get(arg, arg) if not path else arg)
        node = commands[arg]
    return tuple(path)


def spelled_in_tests(path: tuple[str, ...]) -> bool:
    """Whether a test passes this command (under either name of its group) to the CLI."""
    names = [path[0], *(alias for alias, name in ALIASES.items() if name == path[0])]
    rest = "".join(f', "{part}"' for part in path[1:])
    patterns = [f'"{name}"{rest}' for name in names]
    return any(p in test.read_text() for test in CLI_TESTS for p in patterns)


LINES = documented_lines()


def test_the_page_shows_every_rest_command() -> None:
    paths = {command_path(args) for args in LINES}
    assert len(LINES) >= 20 and all(paths)
    for group in ("lease", "hosts", "pools", "quotas", "validations"):
        assert {p[1] for p in paths if p[0] == group} >= {"list", "show"}, group
    assert {("login",), ("logout",), ("whoami",)} <= paths


@pytest.mark.parametrize("args", LINES, ids=[" ".join(a) for a in LINES])
def test_each_documented_line_parses_and_is_tested(args: list[str]) -> None:
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    path = command_path(args)
    assert spelled_in_tests(path), f"no CLI test runs `gpufabric {' '.join(path)}`"
