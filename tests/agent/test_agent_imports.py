"""The agent runs without the controller extra: its CLI and every module of it leave the controller's stack
(web framework, database, cloud SDKs) unimported. The agent image has only gpufabric[agent]; the import contract
in pyproject.toml checks the static imports, this checks what a running agent process actually loads."""

from __future__ import annotations

import json
import subprocess
import sys

CONTROLLER_STACK = ["fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "boto3", "botocore", "openstack"]

SCRIPT = """
import importlib, json, pkgutil, sys
import agent
from agent.cli import main

def cli(*argv):
    sys.argv = ["gpufabric-agent", *argv]
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, (argv, exc.code)

cli("--help")
cli("run", "--help")
cli("inventory", "--sim", "h100-8x", "--json")
for module in pkgutil.walk_packages(agent.__path__, "agent."):
    importlib.import_module(module.name)
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})), file=sys.stderr)
"""


def test_the_agent_loads_nothing_of_the_controller_stack() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stderr.strip().splitlines()[-1]))
    assert {"agent", "drivers", "pynvml", "pydantic", "typer", "httpx"} <= loaded  # the check sees real imports
    assert not loaded & set(CONTROLLER_STACK), sorted(loaded & set(CONTROLLER_STACK))
