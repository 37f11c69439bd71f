"""Applying MIG configs through the real pynvml API against the NVML simulator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.mig.apply import MigApplyReport, apply_mig_document, converge_mig, observe, plan_from_nvml
from agent.mig.config import parse_mig_config
from agent.mig.model import MigValidationError

sim_host = pytest.importorskip("drivers.nvml.sim.host")
from drivers.nvml.session import open_nvml  # noqa: E402

SimulatedCrash = sim_host.SimulatedCrash

CONFIGS = """\
version: v1
mig-configs:
  all-disabled:
    - devices: all
      mig-enabled: false
  all-1g.5gb:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.5gb": 7}
  all-balanced:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}
  gpu0-balanced:
    - devices: [0]
      mig-enabled: true
      mig-devices: {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}
  mixed:
    - devices: [0]
      mig-enabled: true
      mig-devices: {"1g.10gb": 1, "1g.5gb": 1, "3g.20gb": 1}
    - devices: [1]
      mig-enabled: false
  bad-profile:
    - devices: all
      mig-enabled: true
      mig-devices: {"1g.12gb": 1}
"""
CONFIG = parse_mig_config(CONFIGS, "test-configs.yaml")

# Two idle A100-40GB with MIG off whose mode changes apply at once (bare metal, no VM).
A100_OFF_SPEC = """\
hostname: sim-a100-off
mig_reset_required: false
gpus:
  - product: A100-40GB
    count: 2
    mig: disabled
"""


@contextmanager
def sim(spec: str | Path, state: Path) -> Iterator[Any]:
    with open_nvml(spec, state) as host:
        assert host is not None
        yield host


def apply_once(
    spec: str | Path, state: Path, name: str, *, force: bool = False, fail_after: int | None = None
) -> tuple[MigApplyReport, list[Any]]:
    with sim(spec, state) as host:
        if fail_after is not None:
            host.fail_after(fail_after)
        report = converge_mig(CONFIG, name, force=force)
        return report, list(host.mutation_log)


def layouts(spec: str | Path, state: Path) -> list[list[tuple[str, int, int, int]]]:
    """Per GPU: (profile, start, size, compute instances) of every GPU instance, as NVML reports them."""
    with sim(spec, state):
        return [
            [(gi.profile, gi.placement.start, gi.placement.size, len(gi.compute_instances)) for gi in gpu.instances]
            for gpu in observe()
        ]


@pytest.fixture
def a100_off(tmp_path: Path) -> Path:
    path = tmp_path / "a100-off.yaml"
    path.write_text(A100_OFF_SPEC)
    return path


def test_apply_keeps_busy_instance_and_fills_the_rest(tmp_path: Path) -> None:
    report, log = apply_once("a100-40gb-2x-mig", tmp_path / "s.json", "all-1g.5gb")
    assert [g.status for g in report.gpus] == ["changed", "changed"]
    gpu1 = report.gpus[1]
    assert not any(op.op.startswith("destroy") for op in gpu1.operations)
    busy = [e for e in gpu1.layout if e.busy]
    assert [(e.profile, e.placement.start, e.gpu_instance_id) for e in busy] == [("1g.5gb", 6, 13)]
    assert all(len(layout) == 7 for layout in layouts("a100-40gb-2x-mig", tmp_path / "s.json"))
    # The simulator saw GPU instances created exactly at the planned placements.
    planned = sorted(
        (op.gpu, op.placement.start)
        for g in report.gpus
        for op in g.operations
        if op.placement and op.op == "create-gi"
    )
    created = sorted((m.gpu, m.detail["start"]) for m in log if m.call.startswith("nvmlDeviceCreateGpuInstance"))
    assert planned == created and len(created) == 6 + 4


def test_apply_twice_changes_nothing_the_second_time(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    apply_once("a100-40gb-2x-mig", state, "all-1g.5gb")
    report, log = apply_once("a100-40gb-2x-mig", state, "all-1g.5gb")
    assert log == []
    assert [g.status for g in report.gpus] == ["untouched", "untouched"]


def test_satisfied_gpu_is_not_touched(tmp_path: Path) -> None:
    # GPU 0 of the bundled spec holds 3g.20gb + 2g.10gb + 1g.5gb; "mixed" asks GPU 0 for something
    # else and GPU 1 for MIG off, "gpu0-balanced" adds one 1g.5gb on GPU 0 and leaves GPU 1 alone.
    report, log = apply_once("a100-40gb-2x-mig", tmp_path / "s.json", "gpu0-balanced")
    assert [g.status for g in report.gpus] == ["changed", "untouched"]
    assert [op.op for op in report.gpus[0].operations] == ["create-gi", "create-ci"]
    assert all(m.gpu == 0 for m in log)


def test_blocked_gpu_is_reported_and_others_still_converge(tmp_path: Path) -> None:
    report, log = apply_once("a100-40gb-2x-mig", tmp_path / "s.json", "all-balanced")
    gpu0, gpu1 = report.gpus
    assert gpu0.status == "changed"
    assert gpu1.status == "blocked" and gpu1.operations == []
    assert "GI 13 (1g.5gb at 6:1) with running processes (pid 4242)" in gpu1.blockers[0]
    assert report.blocked and not report.converged
    assert all(m.gpu == 0 for m in log)


def test_force_plans_the_destroy_but_nvml_refuses_while_processes_run(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    report, _ = apply_once("a100-40gb-2x-mig", state, "all-balanced", force=True)
    gpu1 = report.gpus[1]
    assert gpu1.status == "failed" and "In use" in (gpu1.reason or "")
    assert gpu1.operations[-1].result == "failed"
    with sim("a100-40gb-2x-mig", state) as host:
        host.remove_process(4242)
    report, _ = apply_once("a100-40gb-2x-mig", state, "all-balanced", force=True)
    assert report.converged
    assert sorted(e.profile for e in report.gpus[1].layout) == ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"]


def test_refused_config_changes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    with sim("a100-40gb-2x-mig", state) as host:
        with pytest.raises(MigValidationError) as info:
            converge_mig(CONFIG, "bad-profile")
        assert host.mutation_log == []
    assert "config 'bad-profile' entry 1 (devices all) GPU 0 (NVIDIA A100-SXM4-40GB): profile '1g.12gb'" in str(
        info.value
    )


def test_enable_mig_pending_reset_then_converge_after_reset(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    report, log = apply_once("h100-8x", state, "all-disabled")
    assert log == [] and {g.status for g in report.gpus} == {"untouched"}
    h100 = parse_mig_config(
        "version: v1\nmig-configs:\n  two:\n    - devices: [0]\n      mig-enabled: true\n"
        "      mig-devices: {3g.40gb: 2}\n"
    )
    with sim("h100-8x", state) as host:
        report = converge_mig(h100, "two")
        assert [m.call for m in host.mutation_log] == ["nvmlDeviceSetMigMode"]
    gpu0 = report.gpus[0]
    assert gpu0.status == "pending-reset" and gpu0.mig_state == "pending-enable"
    assert gpu0.operations[0].result == "pending-reset"
    assert report.pending_reset and not report.converged
    with sim("h100-8x", state) as host:
        again = converge_mig(h100, "two")
        assert host.mutation_log == []  # waiting for the reset is not a reason to call NVML again
        assert again.gpus[0].status == "pending-reset"
        host.reset_gpu(0)
        done = converge_mig(h100, "two")
    assert done.gpus[0].status == "changed" and done.gpus[0].mig_state == "enabled"
    assert [(e.profile, e.placement.start) for e in done.gpus[0].layout] == [("3g.40gb", 0), ("3g.40gb", 4)]


def test_enable_and_disable_when_mode_applies_at_once(tmp_path: Path, a100_off: Path) -> None:
    state = tmp_path / "s.json"
    report, _ = apply_once(a100_off, state, "mixed")
    assert [g.status for g in report.gpus] == ["changed", "untouched"]
    ops = [op.op for op in report.gpus[0].operations]
    assert ops[0] == "set-mig-mode" and ops.count("create-gi") == 3
    report, _ = apply_once(a100_off, state, "all-disabled")
    assert [g.status for g in report.gpus] == ["changed", "untouched"]
    assert report.gpus[0].operations[-1].op == "set-mig-mode" and report.gpus[0].mig_state == "disabled"


def test_plan_from_nvml_and_document_entry_point(tmp_path: Path) -> None:
    with sim("a100-40gb-2x-mig", tmp_path / "s.json") as host:
        plan = plan_from_nvml(CONFIG, "gpu0-balanced")
        assert host.mutation_log == []
        assert [op.op for op in plan.operations] == ["create-gi", "create-ci"]
        report = apply_mig_document(CONFIGS, "gpu0-balanced")
        assert report.converged and report.source == "<desired state>"


def test_observe_reads_profile_table_from_nvml(tmp_path: Path) -> None:
    with sim("a100-40gb-2x-mig", tmp_path / "s.json"):
        gpu0 = observe()[0]
    assert gpu0.profiles is not None
    by_name = {p.name: p for p in gpu0.profiles}
    assert (by_name["3g.20gb"].profile_id, by_name["3g.20gb"].profile_index) == (9, 2)
    assert [(p.start, p.size) for p in by_name["3g.20gb"].placements] == [(0, 4), (4, 4)]
    assert by_name["1g.5gb+me"].max_instances == 1
    assert [(gi.profile, gi.placement.start) for gi in gpu0.instances] == [
        ("2g.10gb", 0),
        ("1g.5gb", 2),
        ("3g.20gb", 4),
    ]


def test_profile_table_borrowed_from_same_model_with_mig_on(tmp_path: Path) -> None:
    spec = tmp_path / "mixed.yaml"
    spec.write_text(
        "hostname: h\nmig_reset_required: false\ngpus:\n"
        "  - {product: A100-40GB, mig: enabled}\n  - {product: A100-40GB, mig: disabled}\n"
    )
    with sim(spec, tmp_path / "s.json") as host:
        gpus = observe()
        assert gpus[1].profiles_borrowed_from == 0 and gpus[1].profiles == gpus[0].profiles
        bad = parse_mig_config(
            "version: v1\nmig-configs:\n  bad:\n    - devices: [1]\n      mig-enabled: true\n"
            "      mig-devices: {1g.12gb: 1}\n"
        )
        with pytest.raises(MigValidationError, match=r"GPU 1 .*profile '1g\.12gb' does not exist"):
            converge_mig(bad, "bad")
        assert host.mutation_log == []  # refused before MIG mode was touched


# --- crash safety ---------------------------------------------------------------------------

CRASH_CASES = [
    pytest.param("a100-40gb-2x-mig", "all-1g.5gb", id="destroy-and-create-around-busy"),
    pytest.param("a100-off", "mixed", id="enable-mode-then-create"),
    pytest.param("a100-40gb-2x-mig", "mixed", id="relayout-and-disable-blocked"),
]


@pytest.mark.parametrize(("spec_name", "config"), CRASH_CASES)
def test_crash_after_every_operation_converges_on_next_run(
    tmp_path: Path, a100_off: Path, spec_name: str, config: str
) -> None:
    spec: str | Path = a100_off if spec_name == "a100-off" else spec_name
    reference_state = tmp_path / "reference.json"
    reference, log = apply_once(spec, reference_state, config)
    expected = layouts(spec, reference_state)
    expected_status = [g.status for g in reference.gpus]
    n = len(log)
    assert n >= 4, "the plan must be non-trivial"
    for k in range(1, n + 1):
        state = tmp_path / f"crash-{k}.json"
        with pytest.raises(SimulatedCrash):
            apply_once(spec, state, config, fail_after=k)
        recovered, _ = apply_once(spec, state, config)
        assert layouts(spec, state) == expected, f"crash at mutating call {k} of {n}"
        assert [g.status == "blocked" for g in recovered.gpus] == [s == "blocked" for s in expected_status]
        _, again = apply_once(spec, state, config)
        assert again == [], f"crash at call {k}: a further apply still changed something"
