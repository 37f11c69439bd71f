"""Backends reach the lease tables only through the contract (issue 14, items 3 and 5).

Every module under ``controller/backends`` is parsed (``ast``, nothing is imported): none may import the lease models
(``Lease``, ``SliceClaim``, ``LeaseTransition``) or ``controller.store.lease_states``, refer to those models through
a module it imported, or name the lease tables in SQL text. What a backend needs of leases and claims it asks the
app's ``LeaseDirectory`` (``controller.backends.contract``); only the registry, which builds the app's kinds, may
import the store's implementation of it. Import-linter keeps the module-level part too (``pyproject.toml``).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BACKENDS = ROOT / "controller" / "backends"

LEASE_MODELS = frozenset({"Lease", "SliceClaim", "LeaseTransition"})
MODELS = "controller.store.models"
LEASE_STATES = "controller.store.lease_states"
IMPLEMENTATION = "controller.store.lease_directory"
# The one module that makes the app's kinds and hands them the directory.
MAY_BUILD_DIRECTORY = frozenset({"controller/backends/registry.py"})
LEASE_TABLE_SQL = re.compile(r"\b(from|join|update|into)\s+\"?(leases|slice_claims|lease_transitions)\b", re.I)


@dataclass(frozen=True)
class Breach:
    module: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: {self.what}"


def _modules() -> list[Path]:
    return sorted(BACKENDS.rglob("*.py"))


def breaches(path: Path, root: Path = ROOT) -> list[Breach]:
    """What ``path`` (a module of the backends) does with the lease tables that only the contract may do."""
    module = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(), filename=module)
    out: list[Breach] = []
    models_aliases: set[str] = set()  # names this module binds to controller.store.models
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            if node.module == MODELS:
                out += [
                    Breach(module, node.lineno, f"imports {a.name} from {MODELS}")
                    for a in node.names
                    if a.name in LEASE_MODELS or a.name == "*"
                ]
            elif node.module == LEASE_STATES or node.module.startswith(LEASE_STATES + "."):
                out.append(Breach(module, node.lineno, f"imports from {node.module}"))
            elif node.module == IMPLEMENTATION and module not in MAY_BUILD_DIRECTORY:
                out.append(Breach(module, node.lineno, f"imports {IMPLEMENTATION} (the registry hands it out)"))
            elif node.module == "controller.store":
                for a in node.names:
                    if a.name == "models":
                        models_aliases.add(a.asname or a.name)
                    elif a.name == "lease_states":
                        out.append(Breach(module, node.lineno, f"imports {LEASE_STATES}"))
                    elif a.name == "lease_directory" and module not in MAY_BUILD_DIRECTORY:
                        out.append(Breach(module, node.lineno, f"imports {IMPLEMENTATION} (the registry hands it out)"))
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == LEASE_STATES:
                    out.append(Breach(module, node.lineno, f"imports {LEASE_STATES}"))
                elif a.name == IMPLEMENTATION and module not in MAY_BUILD_DIRECTORY:
                    out.append(Breach(module, node.lineno, f"imports {IMPLEMENTATION} (the registry hands it out)"))
                elif a.name == MODELS and a.asname:
                    models_aliases.add(a.asname)  # without one, it is used as ``controller.store.models``
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in LEASE_MODELS:
            owner = ast.unparse(node.value)
            if owner in models_aliases or owner == MODELS:
                out.append(Breach(module, node.lineno, f"refers to {owner}.{node.attr}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and LEASE_TABLE_SQL.search(node.value):
            out.append(Breach(module, node.lineno, "names a lease table in SQL text"))
    return out


def test_every_backend_module_is_parsed() -> None:
    modules = {p.relative_to(BACKENDS).as_posix() for p in _modules()}
    # The kinds, what the OpenStack ones share, and the contract itself are all in the scan.
    assert {"contract.py", "registry.py", "hostsync.py", "eks/sync.py", "openstack/reconcile.py"} <= modules
    assert len(modules) > 40


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(BACKENDS).as_posix())
def test_backend_modules_reach_leases_only_through_the_contract(path: Path) -> None:
    found = breaches(path)
    assert not found, "read leases and claims through LeaseDirectory (controller.backends.contract):\n" + "\n".join(
        map(str, found)
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from controller.store.models import Host, Lease\n", ["imports Lease from controller.store.models"]),
        ("from controller.store.models import SliceClaim as C\n", ["imports SliceClaim from controller.store.models"]),
        ("from controller.store.models import *\n", ["imports * from controller.store.models"]),
        ("from controller.store.lease_states import LIVE\n", ["imports from controller.store.lease_states"]),
        ("from controller.store import lease_states\n", ["imports controller.store.lease_states"]),
        ("import controller.store.lease_states as s\n", ["imports controller.store.lease_states"]),
        ("from controller.store import models as m\nm.Lease.id\n", ["refers to m.Lease"]),
        ("import controller.store.models\ncontroller.store.models.SliceClaim\n", [f"refers to {MODELS}.SliceClaim"]),
        ("from controller.store.lease_directory import StoreLeaseDirectory\n", [f"imports {IMPLEMENTATION}"]),
        ('text("SELECT id FROM slice_claims WHERE released_at IS NULL")\n', ["names a lease table in SQL text"]),
        ("from controller.store.models import Host\nfrom controller.backends.contract import LeaseDirectory\n", []),
    ],
)
def test_the_scan_sees_each_way_in(tmp_path: Path, source: str, expected: list[str]) -> None:
    """The check itself: each way a module could reach the lease tables is caught, and the allowed imports are not."""
    path = tmp_path / "controller" / "backends" / "somekind" / "module.py"
    path.parent.mkdir(parents=True)
    path.write_text(source)
    found = [b.what for b in breaches(path, tmp_path)]
    assert [f for f in found if not any(f.startswith(e) for e in expected)] == []
    assert all(any(f.startswith(e) for f in found) for e in expected), found
