"""The agent and controller images: hadolint passes their Dockerfiles, and their install steps, replayed from the
Dockerfiles themselves in a scratch root (dockerfile_replay.py), give images whose entry points work."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.dockerfile_replay import Image, ReplayError, parse, replay
from tests.support.paths import REPO_ROOT

REPO = REPO_ROOT
DOCKER = REPO / "deploy" / "docker"
HADOLINT = Path(sys.executable).parent / "hadolint"
# Distributions of the controller extra that must never reach the agent image.
CONTROLLER_STACK = {"fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "boto3", "botocore", "openstacksdk"}


def _final_stage(name: str) -> dict[str, list[str]]:
    """Keyword -> arguments of the last stage's instructions (ENV split into NAME=value)."""
    instructions = parse((DOCKER / name).read_text())
    last_from = max(i for i, ins in enumerate(instructions) if ins.keyword == "FROM")
    found: dict[str, list[str]] = {}
    for ins in instructions[last_from:]:
        values = re.findall(r'(\w+)="?([^"\s]*)"?', ins.args) if ins.keyword == "ENV" else [ins.args]
        found.setdefault(ins.keyword, []).extend("=".join(v) if isinstance(v, tuple) else v for v in values)
    return found


def test_there_is_one_dockerfile_per_role() -> None:
    assert sorted(p.name for p in DOCKER.glob("*.Dockerfile")) == ["agent.Dockerfile", "controller.Dockerfile"]


@pytest.mark.parametrize("name", ["agent.Dockerfile", "controller.Dockerfile"])
def test_hadolint_passes(name: str) -> None:
    result = subprocess.run([str(HADOLINT), "--no-color", str(DOCKER / name)], capture_output=True, text=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_hadolint_reports_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = subprocess.run([str(HADOLINT), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "DL3007" in result.stdout and "DL3013" in result.stdout  # the :latest tag, an unpinned package


@pytest.mark.parametrize("name", ["agent.Dockerfile", "controller.Dockerfile"])
def test_base_image_is_a_python_the_project_supports(name: str) -> None:
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(p) for p in requires.removeprefix(">=").split("."))
    bases = {ins.args.split()[0] for ins in parse((DOCKER / name).read_text()) if ins.keyword == "FROM"}
    (base,) = bases  # build and final stage on one Python: the virtualenv moves between them
    version = re.fullmatch(r"python:(\d+)\.(\d+)-slim-\w+", base)
    assert version is not None, base
    assert (int(version[1]), int(version[2])) >= minimum


def test_agent_image_gets_nvml_from_the_host_driver_and_runs_as_root() -> None:
    final = _final_stage("agent.Dockerfile")
    assert "NVIDIA_VISIBLE_DEVICES=all" in final["ENV"]
    assert "NVIDIA_DRIVER_CAPABILITIES=utility" in final["ENV"]  # utility: what carries libnvidia-ml
    assert "USER" not in final  # privileged NVML calls (MIG, compute modes, resets)


def test_controller_image_runs_as_a_non_root_user() -> None:
    final = _final_stage("controller.Dockerfile")
    assert final["USER"] == ["10001:10001"]
    assert "GPUFABRIC_DATA_DIR=/var/lib/gpufabric" in final["ENV"]


def test_replay_refuses_a_step_it_cannot_run_faithfully(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:3.11-slim-bookworm\nRUN apt-get update\n")
    with pytest.raises(ReplayError, match="line 2: RUN apt-get update"):
        replay(dockerfile, REPO, tmp_path / "root")
    dockerfile.write_text("FROM python:3.11-slim-bookworm\nRUN python -m venv /v; rm -rf /\n")
    with pytest.raises(ReplayError, match="joined by &&"):
        replay(dockerfile, REPO, tmp_path / "root")


@pytest.fixture(scope="session")  # built once per worker: module fixtures are rebuilt when xdist interleaves modules
def agent_image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return replay(DOCKER / "agent.Dockerfile", REPO, tmp_path_factory.mktemp("agent-image"))


@pytest.fixture(scope="session")  # built once per worker: module fixtures are rebuilt when xdist interleaves modules
def controller_image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return replay(DOCKER / "controller.Dockerfile", REPO, tmp_path_factory.mktemp("controller-image"))


def _installed(image: Image) -> dict[str, str]:
    result = image.run(["python", "-m", "pip", "list", "--format=json", "--disable-pip-version-check"])
    assert result.returncode == 0, result.stderr
    return {d["name"].lower(): d["version"] for d in json.loads(result.stdout)}


@pytest.mark.slow
@pytest.mark.xdist_group("agent-image")  # one worker builds the image once for both tests
def test_agent_image_holds_the_agent_and_nothing_of_the_controller(agent_image: Image) -> None:
    installed = _installed(agent_image)
    assert installed["gpufabric"] and installed["nvidia-ml-py"]
    assert not CONTROLLER_STACK & set(installed), sorted(CONTROLLER_STACK & set(installed))
    # Every agent module imports with only the agent extra installed (a stray import would fail here).
    script = (
        "import importlib, pkgutil, agent\n"
        "for module in pkgutil.walk_packages(agent.__path__, 'agent.'):\n"
        "    importlib.import_module(module.name)\n"
        "import controller\n"
    )
    result = agent_image.run(["python", "-c", script])
    assert "No module named 'controller'" in result.stderr, result.stderr


@pytest.mark.slow
@pytest.mark.xdist_group("agent-image")
def test_agent_image_entrypoint_runs(agent_image: Image) -> None:
    assert (agent_image.entrypoint, agent_image.cmd) == (["gpufabric-agent"], ["run"])
    assert agent_image.which("gpufabric-agent").startswith(str(agent_image.root))
    top = agent_image.run([*agent_image.entrypoint, "--help"])
    assert top.returncode == 0 and "gpufabric node agent" in top.stdout, top.stderr
    default = agent_image.run([*agent_image.entrypoint, *agent_image.cmd, "--help"])
    assert default.returncode == 0 and "--controller" in default.stdout, default.stderr
    # The bundled simulator specs are package data of the installed (not editable) wheel.
    sim = agent_image.run([*agent_image.entrypoint, "inventory", "--sim", "h100-8x", "--json"])
    assert sim.returncode == 0, sim.stderr
    assert len(json.loads(sim.stdout)["gpus"]) == 8


@pytest.mark.slow
def test_controller_image_entrypoint_runs_and_migrates(controller_image: Image, tmp_path: Path) -> None:
    assert controller_image.entrypoint == ["gpufabric"]
    assert controller_image.cmd[:2] == ["controller", "serve"]
    assert controller_image.exposed == ["8080"] and controller_image.cmd[-2:] == ["--port", "8080"]
    serve = controller_image.run([*controller_image.entrypoint, *controller_image.cmd, "--help"])
    assert serve.returncode == 0 and "Serve the REST API" in serve.stdout, serve.stderr
    installed = _installed(controller_image)
    assert {"fastapi", "sqlalchemy", "psycopg", "boto3", "openstacksdk"} <= set(installed)
    # The Alembic migrations are package data: the installed wheel must carry them.
    url = f"sqlite:///{tmp_path / 'controller.db'}"
    upgrade = controller_image.run(
        [*controller_image.entrypoint, "controller", "db", "upgrade"], GPUFABRIC_DATABASE_URL=url
    )
    assert upgrade.returncode == 0, upgrade.stderr
    assert any(s.startswith("useradd --system --uid 10001") for s in controller_image.skipped)
