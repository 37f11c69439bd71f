"""Server-side apply and field ownership (``metadata.managedFields``) for the Kubernetes API emulator.

What kube-apiserver's structured-merge-diff does, for objects made of maps (lists are atomic values here):

- Every write records who set which fields: an apply under its ``fieldManager`` (operation ``Apply``), any
  other write (create, PUT, merge or JSON patch) under its ``fieldManager`` or, without one, the User-Agent's
  product name as the real server derives it (operation ``Update``). A field a write changes becomes that
  manager's alone; a field it removes is nobody's.
- An apply (``PATCH`` with ``application/apply-patch+yaml``) sets the fields it names. A field whose value it
  changes while another manager owns it is a **409 Conflict** naming the manager and field, unless
  ``force=true``, which takes the field over. Naming a field with the value it already has shares it.
- Fields the manager applied before and leaves out now are removed from the object, unless another manager
  still owns them; so an apply with a smaller set of labels deletes the labels it no longer names.

Field sets are kept in the real ``FieldsV1`` shape (``{"f:metadata": {"f:labels": {"f:a": {}}}}``).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

Path = tuple[str, ...]

# Set by the server, never owned by a manager.
_SERVER_FIELDS = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
                  "deletionTimestamp", "managedFields", "selfLink"}  # fmt: skip
_TOP_LEVEL_IGNORED = {"apiVersion", "kind", "status"}


class ApplyConflict(Exception):
    """Fields another manager owns that an apply would change (``(manager, path)`` pairs)."""

    def __init__(self, conflicts: list[tuple[str, Path]]) -> None:
        self.conflicts = conflicts
        count = f"{len(conflicts)} conflict{'s' if len(conflicts) != 1 else ''}"
        listed = "; ".join(f'conflict with "{manager}" using v1: .{".".join(path)}' for manager, path in conflicts)
        super().__init__(f"Apply failed with {count}: {listed}")


def leaf_fields(obj: Any, prefix: Path = (), *, status: bool = False) -> dict[Path, Any]:
    """Every leaf of an object (maps are walked, anything else is a value) with its value, as owned fields."""
    out: dict[Path, Any] = {}
    if not isinstance(obj, dict):
        return {prefix: obj}
    for key, value in obj.items():
        if not prefix and key in _TOP_LEVEL_IGNORED and not (status and key == "status"):
            continue
        if prefix == ("metadata",) and key in _SERVER_FIELDS:
            continue
        path = (*prefix, key)
        if isinstance(value, dict):
            out.update(leaf_fields(value, path))  # an empty map owns nothing (``labels: {}`` releases them all)
        else:
            out[path] = value
    return out


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for path in sorted(paths):
        node = doc
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return doc


def from_fields_v1(doc: dict[str, Any], prefix: Path = ()) -> set[Path]:
    paths: set[Path] = set()
    for key, value in doc.items():
        if not key.startswith("f:"):
            continue  # "." (the map itself) and keyed list entries ("k:{...}") are not used here
        path = (*prefix, key[2:])
        if isinstance(value, dict) and any(k.startswith("f:") for k in value):
            paths |= from_fields_v1(value, path)
        else:
            paths.add(path)
    return paths


def manager_from_user_agent(user_agent: str | None) -> str:
    """The default field manager kube-apiserver gives a write without ``fieldManager``: the User-Agent's
    product (the text before the first ``/``)."""
    return (user_agent or "unknown").split("/", 1)[0] or "unknown"


def _entries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("metadata") or {}).get("managedFields") or [])


def owners(obj: dict[str, Any]) -> dict[tuple[str, str], set[Path]]:
    """(manager, operation) -> the fields it owns."""
    return {
        (e["manager"], e.get("operation", "Update")): from_fields_v1(e.get("fieldsV1") or {}) for e in _entries(obj)
    }


def _store(obj: dict[str, Any], owned: dict[tuple[str, str], set[Path]]) -> None:
    """Write the ownership back as managedFields; an entry whose fields did not change keeps its time."""
    previous = {(e["manager"], e.get("operation", "Update")): e for e in _entries(obj)}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    entries = []
    for (manager, operation), paths in owned.items():
        if not paths:
            continue
        fields = to_fields_v1(paths)
        old = previous.get((manager, operation))
        if old is not None and old.get("fieldsV1") == fields:
            entries.append(old)
            continue
        entries.append(
            {
                "manager": manager,
                "operation": operation,
                "apiVersion": obj.get("apiVersion", "v1"),
                "time": now,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields,
            }
        )
    meta = obj.setdefault("metadata", {})
    if entries:
        meta["managedFields"] = entries
    else:
        meta.pop("managedFields", None)


def record_update(old: dict[str, Any], new: dict[str, Any], manager: str, *, status: bool = False) -> None:
    """Ownership after a non-apply write from ``old`` to ``new`` (set on ``new``): changed and added fields
    become ``manager``'s alone, removed fields nobody's."""
    before, after = leaf_fields(old, status=status), leaf_fields(new, status=status)
    changed = {p for p, v in after.items() if p not in before or before[p] != v}
    removed = set(before) - set(after)
    owned = owners(old)
    for key in owned:
        owned[key] -= changed | removed
    if changed:
        owned.setdefault((manager, "Update"), set()).update(changed)
    _store(new, owned)


def _set(obj: dict[str, Any], path: Path, value: Any) -> None:
    node = obj
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = copy.deepcopy(value)


def _remove(obj: dict[str, Any], path: Path) -> None:
    trail = [obj]
    for part in path[:-1]:
        child = trail[-1].get(part)
        if not isinstance(child, dict):
            return
        trail.append(child)
    trail[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):  # drop maps the removal emptied (labels: {} -> gone)
        if not trail[depth]:
            trail[depth - 1].pop(path[depth - 1], None)


def server_side_apply(current: dict[str, Any], applied: dict[str, Any], manager: str, *, force: bool) -> dict[str, Any]:
    """The object after ``manager`` applies ``applied`` to ``current``; raises ApplyConflict (nothing changed)."""
    wanted = leaf_fields(applied)
    present = leaf_fields(current)
    owned = owners(current)
    key = (manager, "Apply")
    mine_before = owned.get(key, set())
    conflicts = sorted(
        (other, path)
        for (other, operation), paths in owned.items()
        if (other, operation) != key
        for path in paths
        if path in wanted and present.get(path, object()) != wanted[path]
    )
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    result = copy.deepcopy(current)
    for path, value in wanted.items():
        _set(result, path, value)
    taken = {path for _, path in conflicts}
    for other in owned:
        if other != key:
            owned[other] -= taken
    still_owned = set().union(*(paths for other, paths in owned.items() if other != key)) if owned else set()
    for path in mine_before - set(wanted):
        if path not in still_owned:
            _remove(result, path)
    owned[key] = set(wanted)
    _store(result, owned)
    return result
