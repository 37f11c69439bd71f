"""JSON merge patch (RFC 7386; also serves strategic merge) and JSON patch (RFC 6902).

Part of the Kubernetes API emulator ``devservices.kube_emulator`` (see its docstring).
"""

from __future__ import annotations

import copy
from typing import Any

from devservices.kube_emulator.resources import ApiError


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def json_patch(doc: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902 (add, remove, replace, move, copy, test)."""
    doc = copy.deepcopy(doc)
    for op in operations:
        try:
            kind, tokens = op["op"], _pointer(op["path"])
            if kind in ("move", "copy"):
                source = _pointer(op["from"])
                src_parent = _parent(doc, source)
                value = src_parent[int(source[-1])] if isinstance(src_parent, list) else src_parent[source[-1]]
                value = copy.deepcopy(value)
                if kind == "move":
                    doc = json_patch(doc, [{"op": "remove", "path": op["from"]}])
                doc = json_patch(doc, [{"op": "add", "path": op["path"], "value": value}])
                continue
            if not tokens:
                if kind in ("add", "replace"):
                    doc = copy.deepcopy(op["value"])
                    continue
                raise ApiError(422, "Invalid", f"cannot {kind} the whole document")
            parent = _parent(doc, tokens)
            last = tokens[-1]
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(index, copy.deepcopy(op["value"]))
                elif kind == "remove":
                    parent.pop(index)
                elif kind == "replace":
                    parent[index] = copy.deepcopy(op["value"])
                elif kind == "test" and parent[index] != op["value"]:
                    raise ApiError(422, "Invalid", f"test failed at {op['path']}")
            else:
                if kind == "add":
                    parent[last] = copy.deepcopy(op["value"])
                elif kind == "remove":
                    del parent[last]
                elif kind == "replace":
                    if last not in parent:
                        raise KeyError(last)
                    parent[last] = copy.deepcopy(op["value"])
                elif kind == "test" and parent.get(last) != op["value"]:
                    raise ApiError(422, "Invalid", f"test failed at {op['path']}")
        except ApiError:
            raise
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ApiError(422, "Invalid", f"json patch {op.get('op')} {op.get('path')}: {exc!r}") from None
    return doc
