"""Every command the docs show exists: its sub-commands and options are the real ones, and the ones that need no
controller, network or cloud are run.

Where commands are taken from (README.md, docs/*.md, deploy/helm/gpufabric/README.md):

* fenced code blocks labelled ``sh``, ``bash``, ``shell``, ``console`` or unlabelled. In ``console`` blocks only
  lines starting with the prompt ``$ `` are commands (the rest is output); elsewhere every line is. A line
  ending in ``\\`` continues on the next one; the command is reported at its first line.
* inline code spans (also spanning a line break) that start with ``gpufabric ``, ``gpufabric-agent ``,
  ``.venv/bin/gpufabric``, ``./dev ``, ``python -m bench.``, ``.venv/bin/python -m bench.`` or ``scripts/``.

How a line is read: it is split like a shell does (``shlex``, so ``# ...`` after a blank is a comment and quotes
group words). A command starts at the first word, after ``|``, ``||``, ``&&``, ``;`` or ``--`` (as in
``kubectl exec ... -- gpufabric ...``) and after ``NAME=value`` environment assignments; it ends at the next of
those separators or a redirection. So ``helm install gpufabric ...`` is not a ``gpufabric`` command. Commands
are ``gpufabric``/``gpufabric-agent`` (bare or by a path such as ``.venv/bin/gpufabric``), ``./dev``,
``python -m bench.X`` (any ``python``/``python3`` path) and ``scripts/X``.

Placeholders: ``<word>`` is a value (replaced before splitting, so it is not a redirection); a word that is only
``...`` or ``…`` stands for "more arguments" and is dropped; usage brackets ``[--json]`` are removed, so optional
parts are checked like the rest; ``a|b|c`` inside one word (usage alternation) names each of ``a``, ``b``, ``c``
where a sub-command is expected. Other values (``FILE``, ``URL``, ``9f0c2d...``, ``"$TOKEN"``) are positional
arguments or option values and are not checked. Every ``-x``/``--option`` word must be an option of the command
(or group) it follows, and every word where a sub-command is expected must be one.

What is checked: for ``gpufabric``/``gpufabric-agent`` the click objects of the real typer apps; for ``./dev`` that
the ``dev`` script's ``case`` handles the sub-command; for ``python -m bench.X`` that the module exists and every
option is in its ``--help``; for ``scripts/X`` that the file exists, is executable and its ``--help`` names the
sub-command. ``RUNNABLE`` lists the documented commands that need no controller, network or cloud; they are run
and must exit 0, and each must still be in the docs. ``NOT_COMMANDS`` lists the spans that look like a command
but are something else (a message text). tests/controller/test_cli_docs.py additionally requires a CLI test for
each command of docs/cli.md.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from agent.cli import app as agent_app
from controller.cli import app as controller_app
from tests.support.paths import REPO_ROOT

REPO = REPO_ROOT
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), REPO / "deploy/helm/gpufabric/README.md"])

SHELL_LANGUAGES = {"", "sh", "bash", "shell", "console"}
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
INLINE_SPAN = re.compile(r"(?<!`)`([^`]+)`(?!`)")
INLINE_COMMAND = re.compile(
    r"^(\$ )?(gpufabric |gpufabric-agent |\.venv/bin/gpufabric|\./dev |(\.venv/bin/)?python3? -m bench\.|scripts/)"
)
SEPARATORS = {"|", "||", "&&", ";", "--"}
REDIRECTION = re.compile(r"^[0-9]*(>|>>|<|>&)")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PLACEHOLDER = re.compile(r"<[^<>\s]+>")
APPS = {"gpufabric": controller_app, "gpufabric-agent": agent_app}

# Inline spans that start like a command but quote something else.
NOT_COMMANDS = {
    "gpufabric lease <id>: deploy failed: <last_error>",  # docs/openstack.md: the error a failed deploy records
}

# Documented commands that need no controller, network or cloud: (doc, command as the docs spell it, after
# the rules above). Each is run and must exit 0.
RUNNABLE = [
    ("README.md", ".venv/bin/gpufabric-agent sim list"),
    ("README.md", ".venv/bin/gpufabric-agent inventory --sim h100-8x"),
    ("README.md", ".venv/bin/gpufabric-agent inventory --sim a100-40gb-2x-mig --json"),
    ("README.md", ".venv/bin/gpufabric-agent mig profiles --sim a100-40gb-2x-mig --json"),
    ("docs/health.md", "gpufabric-agent health --sim ecc-faulty"),
    ("docs/nccl.md", "gpufabric nccl parse tests/drivers/nccl/fixtures/mpirun_tag_output_all_reduce.log"),
    ("docs/eks.md", "gpufabric eks import-eksctl deploy/eksctl/gpu-cluster.yaml --json"),
]


@dataclass(frozen=True)
class Command:
    doc: str  # path relative to the repo
    line: int
    words: tuple[str, ...]  # the executable first

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}: `{' '.join(self.words)}`"

    @property
    def program(self) -> str:
        exe = self.words[0]
        if Path(exe).name in ("gpufabric", "gpufabric-agent"):
            return Path(exe).name
        if exe == "./dev":
            return "dev"
        if exe.startswith("scripts/"):
            return "script"
        return "bench"


def is_executable(words: list[str], i: int) -> bool:
    word = words[i]
    if Path(word).name in ("gpufabric", "gpufabric-agent") or word == "./dev" or word.startswith("scripts/"):
        return True
    return (
        Path(word).name in ("python", "python3")
        and words[i + 1 : i + 2] == ["-m"]
        and words[i + 2 : i + 3] != []
        and words[i + 2].startswith("bench.")
    )


def split_line(text: str) -> list[str]:
    """Shell words of one command line, placeholders resolved (see the module docstring)."""
    text = PLACEHOLDER.sub("PLACEHOLDER", text)
    words = []
    for word in shlex.split(text, comments=True):
        if word in ("...", "…"):
            continue
        word = word.strip("[]")
        if word:
            words.append(word)
    return words


def commands_in(words: list[str]) -> Iterator[list[str]]:
    """The documented commands among a line's words (see the module docstring for where one starts)."""
    i, at_start = 0, True
    while i < len(words):
        word = words[i]
        if word in SEPARATORS:
            at_start = True
        elif at_start and (ENV_ASSIGNMENT.match(word) or word in ("sudo", "exec", "time")):
            pass
        elif at_start and is_executable(words, i):
            end = i + 1
            while end < len(words) and words[end] not in SEPARATORS - {"--"} and not REDIRECTION.match(words[end]):
                end += 1
            yield words[i:end]
            i, at_start = end, False
            continue
        else:
            at_start = False
        i += 1


def fenced_lines(lines: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, command text) for each command line of the shell code blocks, continuations joined."""
    language: str | None = None
    pending: tuple[int, str] | None = None
    for number, line in enumerate(lines, start=1):
        fence = FENCE.match(line)
        if fence:
            language = fence.group(2) if language is None else None
            pending = None
            continue
        if language not in SHELL_LANGUAGES:
            continue
        text = line.strip()
        if pending is None:
            if language == "console":
                if not text.startswith("$ "):
                    continue
                text = text[2:]
            elif text.startswith("$ "):
                text = text[2:]
            start = number
        else:
            start, text = pending[0], f"{pending[1]} {text}"
        if text.endswith("\\"):
            pending = (start, text[:-1])
            continue
        pending = None
        yield start, text


def inline_lines(lines: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, span) for each inline code span outside code blocks that starts like a command."""
    in_block = False
    paragraph: list[tuple[int, str]] = []

    def flush() -> Iterator[tuple[int, str]]:
        text = " ".join(line for _, line in paragraph)
        offsets = []  # character offset in `text` where each source line starts
        position = 0
        for number, line in paragraph:
            offsets.append((position, number))
            position += len(line) + 1
        for match in INLINE_SPAN.finditer(text):
            span = match.group(1).strip()
            if INLINE_COMMAND.match(span) and span not in NOT_COMMANDS:
                number = max(n for offset, n in offsets if offset <= match.start())
                yield number, span.removeprefix("$ ")
        paragraph.clear()

    for number, line in enumerate(lines, start=1):
        if FENCE.match(line):
            yield from flush()
            in_block = not in_block
            continue
        if in_block:
            continue
        if not line.strip() or line.lstrip().startswith("|"):  # a table row is a paragraph of its own
            yield from flush()
        paragraph.append((number, line.strip()))
        if line.lstrip().startswith("|"):
            yield from flush()
    yield from flush()


def documented_commands() -> list[Command]:
    found: list[Command] = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        name = doc.relative_to(REPO).as_posix()
        for number, text in [*fenced_lines(lines), *inline_lines(lines)]:
            if not re.search(r"gpufabric|\./dev|bench\.|scripts/", text):
                continue
            try:
                words = split_line(text)
            except ValueError as exc:
                raise AssertionError(f"{name}:{number}: cannot split {text!r} like a shell: {exc}") from exc
            found.extend(Command(name, number, tuple(command)) for command in commands_in(words))
    return found


COMMANDS = documented_commands()


def by_program(program: str) -> list[Command]:
    return [c for c in COMMANDS if c.program == program]


def option_named(command: Any, name: str) -> Any:
    """The option of a click command (typer vendors click: its classes are not ``click``'s) called ``name``."""
    for param in command.params:
        if param.param_type_name == "option" and name in (*param.opts, *param.secondary_opts):
            return param
    return None


def cli_errors(root: Any, words: tuple[str, ...]) -> list[str]:
    """What in ``words`` (the arguments after the executable) is not a sub-command or option of ``root``."""
    errors: list[str] = []
    nodes: list[tuple[Any, list[str]]] = [(root, [])]  # several after an a|b|c alternation
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("-") and word != "-":
            name, has_value, _ = word.partition("=")
            takes_value = False
            for node, path in nodes:
                if name == "--help":
                    continue
                option = option_named(node, name)
                if option is None:
                    errors.append(f"`{' '.join(path) or '(top level)'}` has no option {name}")
                elif not (option.is_flag or option.count or has_value):
                    takes_value = True
            i += 2 if takes_value else 1
            continue
        if hasattr(nodes[0][0], "commands"):  # typer's groups are not click.Group subclasses
            following = []
            for node, path in nodes:
                commands: dict[str, Any] = getattr(node, "commands", {})
                for name in word.split("|") if "|" in word else [word]:
                    if name in commands:
                        following.append((commands[name], [*path, name]))
                    else:
                        errors.append(f"`{' '.join(path) or '(top level)'}` has no sub-command {name!r}")
            if errors:
                return errors
            nodes = following
        i += 1
    return errors


@pytest.mark.parametrize("program", ["gpufabric", "gpufabric-agent"])
def test_every_documented_cli_command_and_option_exists(program: str) -> None:
    root = typer.main.get_command(APPS[program])
    commands = by_program(program)
    errors = [f"{c.where}: {e}" for c in commands for e in cli_errors(root, c.words[1:])]
    assert errors == [], "\n".join(errors)
    assert len(commands) >= (50 if program == "gpufabric" else 15)  # the extraction finds them


def test_the_checks_see_missing_commands_and_options() -> None:
    root = typer.main.get_command(controller_app)
    assert cli_errors(root, ("lease", "list", "--state", "ready")) == []
    assert cli_errors(root, ("validate", "run|show|list")) == []
    assert cli_errors(root, ("lease", "lists")) == ["`lease` has no sub-command 'lists'"]
    assert cli_errors(root, ("lease", "list", "--stat", "ready")) == ["`lease list` has no option --stat"]
    agent = typer.main.get_command(agent_app)
    assert cli_errors(agent, ("health", "--sim", "ecc-faulty", "--json", "--watch", "5")) == []
    assert cli_errors(agent, ("mig", "plan", "--config=x.yaml", "--select", "all")) == []


def test_the_extraction_follows_the_documented_rules() -> None:
    text = "```console\n$ kubectl -n gpufabric exec deploy/x -- \\\n    gpufabric admin token create --role admin\n"
    text += "output gpufabric line\n```\n\n```sh\nhelm install gpufabric deploy/helm/gpufabric -n gpufabric\n"
    text += "A=1 gpufabric-agent mig plan --config FILE [--sim SPEC]  # comment --x\n"
    text += "kubectl logs job/n | gpufabric nccl parse - > out.txt\n```\n"
    text += "Prose with `gpufabric hosts show <host>` and\n`gpufabric validate run|show|list ...`; not `gpufabric_x`.\n"
    lines = text.splitlines()
    found = [(n, tuple(c)) for n, t in [*fenced_lines(lines), *inline_lines(lines)] for c in commands_in(split_line(t))]
    assert found == [
        (2, ("gpufabric", "admin", "token", "create", "--role", "admin")),
        (9, ("gpufabric-agent", "mig", "plan", "--config", "FILE", "--sim", "SPEC")),
        (10, ("gpufabric", "nccl", "parse", "-")),
        (12, ("gpufabric", "hosts", "show", "PLACEHOLDER")),
        (13, ("gpufabric", "validate", "run|show|list")),
    ]


@cache
def help_text(*argv: str) -> str:
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr}"
    return result.stdout


def test_every_documented_dev_command_is_one_the_dev_script_handles() -> None:
    handled = set()
    for labels in re.findall(r"^\s+([a-z|-]+)\)$", (REPO / "dev").read_text(), flags=re.M):
        handled.update(labels.split("|"))
    commands = by_program("dev")
    unknown = [c.where for c in commands if len(c.words) > 1 and c.words[1] not in handled]
    assert unknown == [] and {"demo", "test"} <= {c.words[1] for c in commands if len(c.words) > 1}


def test_every_documented_script_exists_is_executable_and_has_the_sub_command() -> None:
    commands = by_program("script")
    assert commands
    for command in commands:
        script = REPO / command.words[0]
        assert script.is_file() and os.access(script, os.X_OK), f"{command.where}: not an executable file"
        if len(command.words) > 1:
            usage = help_text(str(script), "--help")
            assert re.search(rf"\b{re.escape(command.words[1])}\b", usage), f"{command.where}: not in its --help"


def test_every_documented_benchmark_module_exists_with_its_options() -> None:
    commands = by_program("bench")
    modules = sorted({c.words[2] for c in commands})
    assert len(modules) >= 3
    missing = [m for m in modules if find_spec(m) is None]
    assert missing == [], f"no such modules: {missing}"
    with ThreadPoolExecutor(max_workers=len(modules)) as pool:  # the --help runs overlap: a second each
        helps = pool.map(lambda m: help_text(sys.executable, "-m", m, "--help"), modules)
        usages = dict(zip(modules, helps, strict=True))
    errors = [
        f"{c.where}: {word} is not an option of {c.words[2]}"
        for c in commands
        for word in c.words[3:]
        if word.startswith("-")
        and not re.search(rf"(?<![\w-]){re.escape(word.partition('=')[0])}\b", usages[c.words[2]])
    ]
    assert errors == [], "\n".join(errors)


def test_every_runnable_command_is_still_documented() -> None:
    documented = {(c.doc, " ".join(c.words)) for c in COMMANDS}
    assert [r for r in RUNNABLE if r not in documented] == []


@pytest.mark.parametrize(("doc", "command"), RUNNABLE, ids=[c for _, c in RUNNABLE])
def test_runnable_documented_command_exits_0(
    doc: str, command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # the docs' paths are relative to the repository
    words = shlex.split(command)
    result = CliRunner().invoke(APPS[Path(words[0]).name], words[1:], env={"GPUFABRIC_STATE_DIR": str(tmp_path)})
    assert result.exit_code == 0, f"{doc}: `{command}` exited {result.exit_code}: {result.output}"
    assert result.output.strip()
