"""Every vGPU type the docs name is one the GPU catalog has: an example that names an unknown type is refused."""

from __future__ import annotations

import re

from drivers.gpus.catalog import load_catalog
from tests.support.paths import REPO_ROOT

REPO = REPO_ROOT
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
    assert unknown == {}, f"vGPU types not in drivers/gpus/data/catalog.yaml: {unknown}"
    assert set().union(*named.values()) >= {"A16-4C", "L40S-8C"}  # the docs do name some: the check is not empty


def test_the_data_center_vgpu_table_in_sharing_md_is_the_catalog() -> None:
    """Every row of docs/sharing.md's vGPU table lists exactly its board's types, maxima and MIG profiles."""
    boards = {b.name: b for b in load_catalog().boards()}
    rows = [
        line
        for line in (REPO / "docs" / "sharing.md").read_text().splitlines()
        if line.startswith("| ") and "(`NVIDIA" in line
    ]
    assert len(rows) == 7
    for row in rows:
        board = boards[re.search(r"\(`(NVIDIA [^`]+)`\)", row)[1]]  # type: ignore[index]
        sliced = {(n, None, int(m)) for n, m in re.findall(r"`([A-Z0-9-]+C)` \((\d+)\)", row)}
        backed = {(n, p, int(m)) for n, p, m in re.findall(r"`([A-Z0-9-]+)` -> `([^`]+)` \((\d+)\)", row)}
        assert sliced | backed == {(t.name, t.mig_profile, t.max_instances) for t in board.vgpu_types}, board.name
