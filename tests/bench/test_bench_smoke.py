"""bench/placement_vs_openstack, REST side: the store fleet is the in-process fleet, and the bench runs end to end on
a tiny fleet (real controller processes, OpenStack skipped) and writes its figures where it is told."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from bench.placement_vs_openstack.__main__ import main
from bench.placement_vs_openstack.fleets import gpufabric_fleet
from bench.placement_vs_openstack.rest import load_store_fleet
from controller.backends.registry import build_backends
from controller.leases.fleet import to_placement_host
from controller.store.db import Database
from controller.store.models import Device
from controller.store.models import Host as HostRow
from controller.store.schema import upgrade


def test_store_fleet_is_the_in_process_fleet(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    db = Database(url)
    upgrade(db.engine)
    assert load_store_fleet(url, 3, "vgpu")["devices"] == 6
    capabilities = build_backends(db).capabilities
    with db.session() as session:
        rows = session.scalars(
            select(HostRow).options(selectinload(HostRow.devices).selectinload(Device.mig_instances))
        ).all()
        stored = sorted((to_placement_host(r, capabilities) for r in rows), key=lambda h: h.id)
    for got, want in zip(stored, gpufabric_fleet(3), strict=True):
        assert (got.id, got.region, got.az, got.state) == (want.id, want.region, want.az, want.state)
        assert [(d.uuid, d.model, d.memory_mib, d.mode, d.vgpu_types) for d in got.devices] == [
            (d.uuid, d.model, d.memory_mib, d.mode, d.vgpu_types) for d in want.devices
        ]
    # The lease phase's fleet: the same hosts, GPUs whole; loading replaces the previous fleet.
    assert load_store_fleet(url, 2, "gpu")["hosts"] == 2
    with db.session() as session:
        rows = session.scalars(select(HostRow).options(selectinload(HostRow.devices))).all()
        assert {d.mode for r in rows for d in to_placement_host(r, capabilities).devices} == {"whole"}
        assert len(rows) == 2
    db.dispose()


@pytest.mark.slow
def test_rest_side_runs_on_a_tiny_fleet(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = ["--sizes", "20", "--skip-openstack", "--repeats", "20", "--requests", "10", "--warmup", "2"]
    argv += ["--pairs", "8", "--clients", "2", "--out", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "placement_vs_openstack.json").read_text())
    row = result["sizes"]["20"]
    assert row["placement"] is None and "ratios" not in row
    assert row["gpufabric"]["hosts"] == 20
    rest = row["rest"]["sqlite"]
    assert rest["fleet_vgpu"] == rest["fleet_vgpu"] | {"hosts": 20, "devices": 40, "mode": "vgpu"}
    dry = rest["dry_run"]
    assert dry["requests"] == dry["n"] == 10
    assert {"p50_ms", "p99_ms", "requests_per_s", "server_cpu_ms_per_request"} <= dry.keys()
    assert dry["answer"]["allocation"]["kind"] == "vgpu"
    assert dry["answer"]["candidates"]["hosts"] == 20
    pairs = rest["lease_pairs"]
    for mode, clients in (("sequential", 1), ("concurrent", 2)):
        x = pairs[mode]
        assert x["clients"] == clients
        assert x["pairs"] == 8 and x["errors"] == {}
        assert {"pairs_per_s", "pair", "create", "release", "server_cpu_ms_per_pair"} <= x.keys()
        assert {"p50_ms", "p99_ms"} <= x["pair"].keys()
        assert x["counters"]["leases_created"] == x["counters"]["leases_released"] == 8
    floor = rest["floor"]
    for name in ("healthz", "authenticated_read"):
        assert floor[name]["n"] == 10 and floor[name]["server_cpu_ms_per_request"] >= 0  # 10 ms clock ticks
    assert floor["authenticated_read"]["path"].startswith("/v1/leases/")
    assert "rest_targets" not in result  # only measured at 10,000 hosts
    md = (out / "placement_vs_openstack.md").read_text()
    assert "REST dry-run p50" in md and "pairs/s" in md and "--skip-openstack" in md
    assert "The floor under any lease" in md
