"""Replay a Dockerfile's install steps without Docker: read the file, run its steps in a scratch directory.

There is no Docker daemon for builds here, so the image tests build what an image would hold from the Dockerfile
itself, instruction by instruction, instead of restating its steps (a restated copy would pass after the file
changed). The scratch directory stands for the image's root filesystem: every absolute path in a step is taken
below it, so ``python -m venv /opt/gpufabric`` and ``/opt/gpufabric/bin/pip install ".[agent]"`` make a real
virtualenv under ``<root>/opt/gpufabric`` from the files the COPY steps brought in, and the entrypoint is then run
from it. All stages share the one root, so ``COPY --from=<stage>`` of a path to the same path (how a virtualenv,
which is not relocatable, moves between stages) needs no copy.

Only what can be replayed faithfully is accepted; anything else is an error naming the instruction, so a new
kind of step in a Dockerfile fails the tests until this module learns it:

* RUN of ``python`` (the base image's interpreter; here the one running the tests) or of a program under a path
  the Dockerfile made (a virtualenv's ``pip``); several commands joined by ``&&``; ``--mount=type=cache`` only.
* RUN of user and directory set-up (``groupadd``, ``useradd``, ``install -d``) is recorded, not run: it changes
  the image's users, not what is installed.
* COPY from the build context (the repository) or from an earlier stage; WORKDIR, ENV, USER, EXPOSE, ENTRYPOINT
  and CMD (exec form).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# The PATH of the official python images; ENV PATH="...:$PATH" extends it.
BASE_IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SETUP_PROGRAMS = {"groupadd", "useradd", "install"}  # install: with -d only
SHELL_OPERATORS = re.compile(r"[;|<>`]|\$\(")


class ReplayError(Exception):
    """The Dockerfile has a step this replay cannot run faithfully."""


@dataclass
class Instruction:
    keyword: str
    flags: dict[str, str]
    args: str
    line: int

    def where(self) -> str:
        return f"line {self.line}: {self.keyword} {self.args}"


@dataclass
class Image:
    """What the final stage left: its root (the scratch directory), environment, user and entry point."""

    root: Path
    env: dict[str, str]
    user: str = "root"
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    base_images: list[str] = field(default_factory=list)

    def path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")

    def image_path(self) -> str:
        """The image's PATH, mapped below the root."""
        return os.pathsep.join(str(self.path(p)) for p in self.env["PATH"].split(":"))

    def host_env(self) -> dict[str, str]:
        """The environment to run the image's programs here: the image's, its PATH first, then this machine's."""
        return {**os.environ, **self.env, "PATH": os.pathsep.join([self.image_path(), os.environ["PATH"]])}

    def which(self, program: str) -> str:
        """``program`` as the image finds it: on its own PATH only, never on this machine's."""
        found = shutil.which(program, path=self.image_path())
        if found is None:
            raise ReplayError(f"{program} is not on the image's PATH {self.env['PATH']}")
        return found

    def run(self, argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.which(argv[0]), *argv[1:]],
            env={**self.host_env(), **env},
            cwd=self.root,
            capture_output=True,
            text=True,
            check=False,
        )


def parse(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile: comments dropped, continued lines joined, flags (``--from=``) split off."""
    instructions: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        keyword, _, rest = pending.partition(" ")
        flags: dict[str, str] = {}
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.strip()
        instructions.append(Instruction(keyword.upper(), flags, rest, start))
        pending = ""
    return instructions


def _exec_form(instruction: Instruction) -> list[str]:
    try:
        value = json.loads(instruction.args)
    except json.JSONDecodeError:
        value = None
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ReplayError(f"{instruction.where()}: use the exec form, a JSON list of strings")
    return value


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)


class Replay:
    def __init__(self, dockerfile: Path, context: Path, root: Path) -> None:
        self.dockerfile = dockerfile
        self.context = context
        self.image = Image(root=root, env={"PATH": BASE_IMAGE_PATH})
        self.workdir = "/"

    def run(self) -> Image:
        for instruction in parse(self.dockerfile.read_text()):
            handler = getattr(self, f"_{instruction.keyword.lower()}", None)
            if handler is None:
                raise ReplayError(f"{instruction.where()}: {instruction.keyword} is not replayed")
            handler(instruction)
        return self.image

    def _from(self, instruction: Instruction) -> None:
        image, _, name = instruction.args.partition(" AS ")
        self.image.base_images.append(image.strip())
        self.image.stages.append(name.strip())
        self.image.env = {"PATH": BASE_IMAGE_PATH}
        self.image.user = "root"
        self.image.entrypoint, self.image.cmd = [], []
        self.workdir = "/"

    def _workdir(self, instruction: Instruction) -> None:
        self.workdir = os.path.join(self.workdir, instruction.args)
        self.image.path(self.workdir).mkdir(parents=True, exist_ok=True)

    def _env(self, instruction: Instruction) -> None:
        for pair in shlex.split(instruction.args):
            name, sep, value = pair.partition("=")
            if not sep:
                raise ReplayError(f"{instruction.where()}: write ENV as NAME=value")
            self.image.env[name] = _expand(value, self.image.env)

    def _copy(self, instruction: Instruction) -> None:
        *sources, dest = shlex.split(instruction.args)
        target = self.image.path(os.path.join(self.workdir, dest))
        stage = instruction.flags.get("from")
        if stage is not None:
            if stage not in self.image.stages[:-1] or sources != [dest] or not target.exists():
                raise ReplayError(f"{instruction.where()}: only a path an earlier stage made, copied to itself")
            return
        if set(instruction.flags) - {"chown", "chmod"}:
            raise ReplayError(f"{instruction.where()}: unknown COPY flags {sorted(instruction.flags)}")
        for source in sources:
            origin = self.context / source
            destination = target / origin.name if dest.endswith("/") or len(sources) > 1 else target
            if origin.is_dir():
                shutil.copytree(origin, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, destination)

    def _run(self, instruction: Instruction) -> None:
        mount = instruction.flags.pop("mount", None)
        if instruction.flags or (mount is not None and not mount.startswith("type=cache,")):
            # A cache mount only speeds up pip; here pip uses the test machine's cache.
            raise ReplayError(f"{instruction.where()}: only --mount=type=cache is replayed")
        if SHELL_OPERATORS.search(instruction.args):
            raise ReplayError(f"{instruction.where()}: only commands joined by && are replayed")
        commands: list[list[str]] = [[]]
        for token in shlex.split(instruction.args):
            if token == "&&":
                commands.append([])
            else:
                commands[-1].append(token)
        for argv in commands:
            self._run_command(instruction, argv)

    def _run_command(self, instruction: Instruction, argv: list[str]) -> None:
        program = argv[0]
        if program in SETUP_PROGRAMS and (program != "install" or "-d" in argv):
            self.image.skipped.append(shlex.join(argv))
            return
        if program in ("python", "python3"):
            executable = sys.executable
        elif program.startswith("/") and self.image.path(program).is_file():
            executable = str(self.image.path(program))
        else:
            raise ReplayError(f"{instruction.where()}: {program} is neither python nor a program the image made")
        args = [str(self.image.path(a)) if a.startswith("/") else a for a in argv[1:]]
        result = subprocess.run(
            [executable, *args],
            cwd=self.image.path(self.workdir),
            env=self.image.host_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ReplayError(f"{instruction.where()} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def _user(self, instruction: Instruction) -> None:
        self.image.user = instruction.args

    def _expose(self, instruction: Instruction) -> None:
        self.image.exposed.extend(instruction.args.split())

    def _entrypoint(self, instruction: Instruction) -> None:
        self.image.entrypoint = _exec_form(instruction)

    def _cmd(self, instruction: Instruction) -> None:
        self.image.cmd = _exec_form(instruction)


def replay(dockerfile: Path, context: Path, root: Path) -> Image:
    """Build ``dockerfile``'s image (from the build ``context``) under ``root``; what its final stage left."""
    return Replay(dockerfile, context, root).run()
