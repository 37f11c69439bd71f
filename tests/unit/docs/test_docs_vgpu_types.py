"""Every vGPU type the docs name is one the GPU catalog has: an example that names an unknown type is refused."""

from __future__ import annotations

import re
from pathlib import Path

from drivers.nvml.catalog import load_catalog

REPO = Path(__file__).resolve().parents[3]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
# NVIDIA's vGPU type names: <board>-<framebuffer GB><series>, series A, B, C or Q (A16-4C, L40S-8C), and the
# Placement trait form CUSTOM_VGPU_<BOARD>_<GB><SERIES> (CUSTOM_VGPU_L40S_6C).
TYPE_NAME = re.compile(r"\b([A-Z][A-Z0-9]*[0-9][A-Z0-9]*)-([0-9]+[ABCQ])\b")
TRAIT_NAME = re.compile(r"\bCUSTOM_VGPU_([A-Z0-9]+)_([0-9]+[ABCQ])\b")
# MIG-backed types: <board>-<compute slices>-<framebuffer GB>C[ME] (A100-3-20C, A30-1-6CME).
MIG_BACKED_NAME = re.compile(r"\b([A-Z][A-Z0-9]*[0-9][A-Z0-9]*)-([0-9])-([0-9]+C(?:ME)?)\b")


def vgpu_types_named(text: str) -> set[str]:
    found = {f"{board}-{size}" for board, size in TYPE_NAME.findall(text)}
    found |= {f"{board}-{slices}-{size}" for board, slices, size in MIG_BACKED_NAME.findall(text)}
    return found | {f"{board}-{size}" for board, size in TRAIT_NAME.findall(text)}


def test_the_pattern_finds_type_names_and_not_product_names() -> None:
    text = 'vgpu_type: "A16-4Q", trait CUSTOM_VGPU_L40S_6C, `NVIDIA A16-4C`; H100-80GB, A100-40GB, 1g.10gb, A30-1-6CME'
    assert vgpu_types_named(text) == {"A16-4Q", "L40S-6C", "A16-4C", "A30-1-6CME"}


def test_every_vgpu_type_named_in_the_docs_is_in_the_catalog() -> None:
    catalog = {v.name for board in load_catalog().boards() for v in board.vgpu_types}
    named = {doc.relative_to(REPO).as_posix(): vgpu_types_named(doc.read_text()) for doc in DOCS}
    unknown = {doc: sorted(types - catalog) for doc, types in named.items() if types - catalog}
    assert unknown == {}, f"vGPU types not in drivers/nvml/data/catalog.yaml: {unknown}"
    assert set().union(*named.values()) >= {"A16-4C", "L40S-8C"}  # the docs do name some: the check is not empty
