"""NVIDIA mig-parted configuration files, read unchanged.

Accepted shapes:

* a raw mig-parted document (``version: v1`` + ``mig-configs``);
* the same document inside a Kubernetes ConfigMap, under any ``data`` key (the GPU Operator uses
  ``config.yaml``);
* several YAML documents in one file (``---``), each one of the above; other Kubernetes objects
  in a multi-document manifest are skipped.

The document's models and rules are the wire contract's (``drivers.contract.mig``), the same ones the
controller validates desired layouts with; this module reads the text around them. Unknown keys are
refused, as mig-parted itself does, and every error names the config, the entry and the field, so an
operator can fix the file without reading code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from drivers.contract.errors import MigConfigError, MigError
from drivers.contract.mig import (
    MAX_MIG_INSTANCES_PER_GPU,
    PROFILE_PATTERN,
    SUPPORTED_VERSION,
    MigConfigEntry,
    MigPartedConfig,
    check_profile_name,
    is_compute_instance_profile,
    normalise_pci_id,
    parse_mig_document,
)

__all__ = [
    "MAX_MIG_INSTANCES_PER_GPU",
    "PROFILE_PATTERN",
    "SUPPORTED_VERSION",
    "MigConfigEntry",
    "MigConfigError",
    "MigError",
    "MigPartedConfig",
    "check_profile_name",
    "is_compute_instance_profile",
    "load_mig_config",
    "normalise_pci_id",
    "parse_mig_config",
]


def _documents_in(source: str, doc: Any) -> list[tuple[str, dict[str, Any]]]:
    """The mig-parted documents held by one YAML document (itself, or a ConfigMap's data values)."""
    if doc is None:
        return []
    if not isinstance(doc, dict):
        raise MigConfigError(f"{source}: expected a mapping (a mig-parted config or a ConfigMap), got {doc!r:.60}")
    if "kind" not in doc and "apiVersion" not in doc:
        return [(source, doc)]
    if doc.get("kind") != "ConfigMap":
        return []  # another Kubernetes object in a multi-document manifest
    name = (doc.get("metadata") or {}).get("name", "?")
    found: list[tuple[str, dict[str, Any]]] = []
    for key, value in (doc.get("data") or {}).items():
        where = f"{source} (ConfigMap {name!r} key {key!r})"
        if not isinstance(value, str):
            continue
        try:
            inner = yaml.safe_load(value)
        except yaml.YAMLError:
            continue  # a data key holding something other than YAML is not ours
        if isinstance(inner, dict) and "mig-configs" in inner:
            found.append((where, inner))
    return found


def load_mig_config(source: str | Path) -> MigPartedConfig:
    """Read a mig-parted config from a file path or from YAML text.

    A ``Path`` (or a string naming an existing file) is read; any other string is parsed as YAML.
    Configs from several documents are merged; a name defined twice is an error.
    """
    if isinstance(source, Path) or ("\n" not in source and Path(source).is_file()):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise MigConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
        return parse_mig_config(text, str(path))
    return parse_mig_config(source)


def parse_mig_config(text: str, source: str = "<text>") -> MigPartedConfig:
    """Parse mig-parted YAML text; ``source`` names it in error messages."""
    label = source
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise MigConfigError(f"{label}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    configs: dict[str, list[MigConfigEntry]] = {}
    origin: dict[str, str] = {}
    for number, doc in enumerate(documents, start=1):
        doc_label = label if len(documents) == 1 else f"{label} document {number}"
        for where, raw in _documents_in(doc_label, doc):
            for name, entries in parse_mig_document(where, raw).items():
                if name in configs:
                    raise MigConfigError(f"{where}: config {name!r} is already defined in {origin[name]}")
                configs[name] = entries
                origin[name] = where
    if not configs:
        raise MigConfigError(f"{label}: no mig-parted config found (expected 'version: v1' and 'mig-configs')")
    return MigPartedConfig(configs=configs, source=label)
