"""`gpufabric` on an agent-only install names the extra to install instead of printing an import traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller.entry import CONTROLLER_EXTRA_MODULES
from tests.support.paths import REPO_ROOT

RUN = (
    "import sys; sys.modules[{module!r}] = None; sys.argv = ['gpufabric', *{args!r}]; "
    "from controller.entry import main; main()"
)


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("sqlalchemy", ["--help"]),  # the CLI's own import needs it
        ("boto3", ["--help"]),
        ("fastapi", ["controller", "serve", "--port", "0"]),  # imported when the command runs
    ],
)
def test_a_missing_controller_package_is_one_line_naming_the_extra(
    module: str, args: list[str], tmp_path: Path
) -> None:
    assert module in CONTROLLER_EXTRA_MODULES
    env = {**os.environ, "GPUFABRIC_DATA_DIR": str(tmp_path), "GPUFABRIC_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"}
    done = subprocess.run(
        [sys.executable, "-c", RUN.format(module=module, args=args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"gpufabric: the controller's packages are not installed (no module {module!r}); "
        "install them with: pip install 'gpufabric[controller]'"
    ]


def test_with_everything_installed_it_is_the_cli() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.argv = ['gpufabric', '--help']; from controller.entry import main; main()",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "login" in done.stdout


def test_the_extra_lists_every_module_it_names() -> None:
    """Each module the message may name belongs to a package of the controller extra in pyproject.toml."""
    import tomllib

    extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["controller"]
    packages = {d.split("==")[0].split("[")[0].lower().replace("-", "_") for d in extra}
    distributions = {"prometheus_client", "openstacksdk", "fastapi_offline", "apscheduler", "sqlalchemy", "kubernetes"}
    assert {"fastapi", "uvicorn", "orjson", "alembic", "boto3"} <= packages
    assert distributions <= packages
