"""Label and field selectors, as kube-apiserver parses and matches them.

Part of the Kubernetes API emulator ``devservices.kube_emulator`` (see its docstring).
"""

from __future__ import annotations

import re
from typing import Any

_SET_REQ = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def label_selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    if not selector:
        return True
    for req in _split_selector(selector):
        set_match = _SET_REQ.match(req)
        if set_match:
            key, op, values = set_match[1], set_match[2], {v.strip() for v in set_match[3].split(",")}
            if op == "in" and labels.get(key) not in values:
                return False
            if op == "notin" and key in labels and labels[key] in values:
                return False
        elif "!=" in req:
            key, value = (s.strip() for s in req.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in req:
            key, value = (s.strip() for s in req.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif req.startswith("!"):
            if req[1:].strip() in labels:
                return False
        elif req not in labels:
            return False
    return True


def _field(obj: dict[str, Any], path: str) -> str | None:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def field_selector_matches(selector: str | None, obj: dict[str, Any]) -> bool:
    if not selector:
        return True
    for req in _split_selector(selector):
        if "!=" in req:
            path, value = (s.strip() for s in req.split("!=", 1))
            if (_field(obj, path) or "") == value:
                return False
        else:
            path, value = (s.strip() for s in req.replace("==", "=").split("=", 1))
            if (_field(obj, path) or "") != value:
                return False
    return True
