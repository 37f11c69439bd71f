"""The `gpufabric` console script: the CLI, or one line saying what to install when the controller extra is not.

The base install (``pip install gpufabric``) is the node agent's set; the controller's web, database and cloud
packages come with ``gpufabric[controller]``. Without them ``gpufabric`` would fail with an import traceback.
"""

from __future__ import annotations

import sys

# The controller extra's top-level modules (pyproject.toml, [project.optional-dependencies] controller).
CONTROLLER_EXTRA_MODULES = frozenset(
    {"fastapi", "fastapi_offline", "starlette", "uvicorn", "orjson", "sqlalchemy", "alembic", "apscheduler",
     "prometheus_client", "boto3", "botocore", "kubernetes", "openstack", "jwt", "cryptography"}
)  # fmt: skip


def main() -> None:
    try:
        from controller.cli import main as cli_main

        cli_main()  # commands import the controller's packages when they run
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in CONTROLLER_EXTRA_MODULES:
            raise
        print(
            f"gpufabric: the controller's packages are not installed (no module {missing!r}); "
            "install them with: pip install 'gpufabric[controller]'",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
