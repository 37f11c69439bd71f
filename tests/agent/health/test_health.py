"""Health classification and state transitions, driven through the simulated NVML."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.health import HealthMonitor, HealthRules, HealthRulesError, xid_catalog
from drivers.nvml.session import open_nvml


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.parametrize(
    ("xid", "action", "state"),
    [
        (13, "application", "degraded"),
        (31, "application", "degraded"),
        (43, "application", "degraded"),
        (45, "informational", "healthy"),
        (48, "gpu-reset", "unhealthy"),
        (74, "gpu-reset", "unhealthy"),
        (79, "node-reboot", "unhealthy"),
        (64, "hardware", "quarantined"),
        (95, "gpu-reset", "unhealthy"),
        (4242, "gpu-reset", "unhealthy"),
    ],
)
def test_xid_classification(xid: int, action: str, state: str) -> None:
    cls = HealthRules().classify_xid(xid)
    assert (cls.action, cls.state) == (action, state)
    assert cls.known == (xid != 4242)


def test_catalog_is_data_with_a_source() -> None:
    catalog = xid_catalog()
    assert catalog.source.startswith("https://docs.nvidia.com/")
    assert catalog.xids[79].mnemonic.endswith("FALLEN_OFF_THE_BUS")


def test_rules_override_classification_and_states(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text("xid_overrides: {13: informational}\naction_states: {node-reboot: quarantined}\n")
    rules = HealthRules.from_file(rules_file)
    assert rules.classify_xid(13).state == "healthy"
    assert rules.classify_xid(79).state == "quarantined"
    rules_file.write_text("xid_overrides: {13: maybe}\n")
    with pytest.raises(HealthRulesError, match=r"xid_overrides\.13"):
        HealthRules.from_file(rules_file)
    rules_file.write_text("tempreature_limit_c: 80\n")
    with pytest.raises(HealthRulesError, match="tempreature_limit_c"):
        HealthRules.from_file(rules_file)


def test_healthy_host(tmp_path: Path) -> None:
    with open_nvml("h100-8x", tmp_path / "sim.json"):
        health = HealthMonitor().observe()
    assert len(health) == 8 and {h.state for h in health.values()} == {"healthy"}


def test_faulty_spec_ecc_remap_and_queued_xids(tmp_path: Path) -> None:
    with open_nvml("ecc-faulty", tmp_path / "sim.json"):
        health = list(HealthMonitor().observe().values())
    assert health[0].state == "healthy"
    bad = health[1]
    assert bad.state == "unhealthy"
    assert {r.code for r in bad.reasons} == {"ecc-dbe", "remap-pending", "xid-48", "xid-79"}
    assert bad.ecc.volatile_uncorrected == 2 and bad.remapped_rows is not None and bad.remapped_rows.pending


def test_application_xid_is_transient(tmp_path: Path) -> None:
    clock = Clock()
    with open_nvml("l4-4x", tmp_path / "sim.json") as host:
        monitor = HealthMonitor(HealthRules(transient_clear_after_s=60), clock=clock)
        host.inject_xid(2, 13)
        health = list(monitor.observe().values())
        assert health[2].state == "degraded" and health[2].reasons[0].code == "xid-13"
        assert health[2].reasons[0].since == clock.now
        clock.now += timedelta(seconds=30)
        host.inject_xid(2, 13)  # a repeat (seen now, at t=30) extends the window to t=90
        repeat = list(monitor.observe().values())[2]
        assert "x2" in repeat.reasons[0].message
        clock.now += timedelta(seconds=45)
        assert list(monitor.observe().values())[2].state == "degraded"
        clock.now += timedelta(seconds=20)
        assert list(monitor.observe().values())[2].state == "healthy"


def test_sticky_xid_survives_restart_until_reset_or_reboot(tmp_path: Path) -> None:
    state = tmp_path / "health.json"
    boot = tmp_path / "boot_id"
    boot.write_text("boot-1\n")
    with open_nvml("l4-4x", tmp_path / "sim.json") as host:
        monitor = HealthMonitor(state_path=state, boot_id_path=boot)
        host.inject_xid(0, 48)
        host.inject_xid(1, 79)
        first = list(monitor.observe().values())
        uuid0, uuid1 = list(monitor.observe())[:2]
        assert first[0].state == "unhealthy" and first[1].state == "unhealthy"
        monitor.close()
        # the agent restarts: reasons come back from the state file
        restarted = HealthMonitor(state_path=state, boot_id_path=boot)
        again = restarted.observe()
        assert again[uuid0].state == "unhealthy" and again[uuid1].state == "unhealthy"
        # a GPU reset clears reset-class XIDs, not the reboot-class one
        assert restarted.note_reset(uuid0) == ["xid-48"]
        assert restarted.note_reset(uuid1) == []
        after_reset = restarted.observe()
        assert after_reset[uuid0].state == "healthy" and after_reset[uuid1].state == "unhealthy"
        # a reboot (new boot id) clears it
        boot.write_text("boot-2\n")
        rebooted = HealthMonitor(state_path=state, boot_id_path=boot)
        assert rebooted.observe()[uuid1].state == "healthy"


def test_hardware_class_needs_an_admin(tmp_path: Path) -> None:
    boot = tmp_path / "boot_id"
    boot.write_text("a")
    with open_nvml("l4-4x", tmp_path / "sim.json") as host:
        monitor = HealthMonitor(state_path=tmp_path / "h.json", boot_id_path=boot)
        host.inject_xid(3, 64)
        uuid = list(monitor.observe())[3]
        assert monitor.observe()[uuid].state == "quarantined"
        boot.write_text("b")
        assert HealthMonitor(state_path=tmp_path / "h.json", boot_id_path=boot).observe()[uuid].state == "quarantined"
        admin = HealthMonitor(state_path=tmp_path / "h.json", boot_id_path=boot)
        assert admin.clear(uuid, "xid-64") == ["xid-64"]
        assert admin.observe()[uuid].state == "healthy"
        admin.quarantine(uuid, "bad NCCL bandwidth")
        q = admin.observe()[uuid]
        assert q.state == "quarantined" and q.reasons[0].code == "admin-quarantine"


def test_gpu_lost_and_back(tmp_path: Path) -> None:
    with open_nvml("l4-4x", tmp_path / "sim.json") as host:
        monitor = HealthMonitor()
        uuids = list(monitor.observe())
        host.set_lost(1, True)
        lost = monitor.observe()
        assert lost[uuids[1]].state == "unhealthy"
        assert [r.code for r in lost[uuids[1]].reasons] == ["gpu-lost"]
        host.set_lost(1, False)
        assert monitor.observe()[uuids[1]].state == "healthy"


def test_ecc_double_bit_clears_with_gpu_reset(tmp_path: Path) -> None:
    with open_nvml("a100-80gb-4x", tmp_path / "sim.json") as host:
        monitor = HealthMonitor()
        host.inject_ecc(0, corrected=5)
        uuid = next(iter(monitor.observe()))
        assert monitor.observe()[uuid].state == "healthy"
        host.inject_ecc(0, uncorrected=1)
        dbe = monitor.observe()[uuid]
        assert dbe.state == "unhealthy" and dbe.reasons[0].code == "ecc-dbe"
        host.reset_gpu(0)
        assert monitor.observe()[uuid].state == "healthy"


def test_remapped_rows_pending_then_failure(tmp_path: Path) -> None:
    with open_nvml("a100-80gb-4x", tmp_path / "sim.json") as host:
        monitor = HealthMonitor()
        uuid = list(monitor.observe())[2]
        host.set_remapped_rows(2, correctable=1, pending=True)
        assert monitor.observe()[uuid].state == "degraded"
        host.set_remapped_rows(2, correctable=1, uncorrectable=600, failure=True)
        failed = monitor.observe()[uuid]
        assert failed.state == "quarantined" and "remap-failure" in {r.code for r in failed.reasons}
        # a remap failure is hardware: it sticks even when the flag reads clear again
        host.set_remapped_rows(2)
        assert monitor.observe()[uuid].state == "quarantined"


def test_retired_pages_pending_and_limit(tmp_path: Path) -> None:
    with open_nvml("t4-retired-pages", tmp_path / "sim.json") as host:
        monitor = HealthMonitor(HealthRules(retired_pages_limit=10))
        # GPU 0 of the spec also has a double-bit error; GPU 1 starts clean
        uuid = list(monitor.observe())[1]
        host.set_retired_pages(1, single_bit=2, double_bit=1, pending=True)
        pending = monitor.observe()[uuid]
        assert pending.state == "degraded" and pending.retired_pages == 3 and pending.retired_pages_pending
        host.set_retired_pages(1, single_bit=8, double_bit=4, pending=False)
        full = monitor.observe()[uuid]
        assert full.state == "quarantined" and [r.code for r in full.reasons] == ["retired-pages-limit"]


def test_thermal_and_power_are_recoverable(tmp_path: Path) -> None:
    spec = tmp_path / "hot.yaml"
    spec.write_text(
        "hostname: sim-hot\ngpus:\n  - product: L4\n    temperature_c: 88\n    power_draw_w: 80\n    power_limit_w: 72\n"
    )
    with open_nvml(str(spec), tmp_path / "sim.json"):
        monitor = HealthMonitor(HealthRules(temperature_limit_c=85, temperature_hysteresis_c=5))
        (hot,) = monitor.observe().values()
        assert hot.state == "degraded" and {r.code for r in hot.reasons} == {"thermal", "power"}
        # within the hysteresis band it stays degraded, below it clears
        monitor.rules = HealthRules(temperature_limit_c=90, temperature_hysteresis_c=5, power_limit_ratio=1.2)
        (still,) = monitor.observe().values()
        assert [r.code for r in still.reasons] == ["thermal"]
        monitor.rules = HealthRules(temperature_limit_c=95, power_limit_ratio=1.2)
        (cool,) = monitor.observe().values()
        assert cool.state == "healthy" and cool.reasons == []


def test_annotate_fills_inventory_health(tmp_path: Path) -> None:
    from agent.discovery import collect_inventory

    with open_nvml("ecc-faulty", tmp_path / "sim.json"):
        inventory = collect_inventory(hostname="x", simulated=True)
        annotated = HealthMonitor().annotate(inventory)
    assert annotated.health.healthy == 1 and annotated.health.unhealthy == 1
    assert annotated.gpus[1].health.state == "unhealthy"
