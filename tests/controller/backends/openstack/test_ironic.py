"""drivers.openstack.ironic against a real standalone Ironic (fake-hardware, noauth, sqlite)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from drivers.openstack import (
    LEASE_TAG,
    AgentBootstrap,
    IronicDeployRequest,
    IronicDriver,
    PollPolicy,
    ProvisioningFailed,
    ProvisioningTimeout,
    find_orphans,
    finish_or_rollback,
)
from tests.support.openstack_cloud import FAST, wait_state

pytestmark = pytest.mark.integration

POLL = PollPolicy(interval_s=FAST, timeout_s=30)


def _bootstrap() -> AgentBootstrap:
    return AgentBootstrap(
        controller_url="https://gpufabric.test:8443",
        bootstrap_token="bt-secret-123",
        ssh_public_keys=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample tenant@example"],
    )


def _request(node: Any, lease: str, **kw: Any) -> IronicDeployRequest:
    return IronicDeployRequest(
        lease_id=lease,
        node=node.id,
        image_source="http://images.test/ubuntu-22.04-gpu.qcow2",
        image_checksum="0" * 32,
        root_gb=40,
        bootstrap=_bootstrap(),
        poll=kw.pop("poll", POLL),
        **kw,
    )


def test_discovery_reads_resource_class_traits_and_capabilities(
    ironic_driver: IronicDriver, make_node: Callable[..., Any]
) -> None:
    h100 = make_node()
    a100 = make_node(
        resource_class="baremetal-gpu-a100-80gb",
        traits=("CUSTOM_GPU_A100_80GB", "CUSTOM_NVLINK"),
        properties={"cpus": 64, "memory_mb": 1024000, "capabilities": "boot_mode:uefi,gpu_count:4"},
    )
    plain = make_node(resource_class="baremetal-general", traits=(), properties={"cpus": 8})

    found = {h.node_id: h for h in ironic_driver.discover()}
    assert plain.id not in found
    h = found[h100.id]
    assert (h.name, h.resource_class, h.provision_state, h.model) == (
        h100.name,
        "baremetal-gpu-h100",
        "available",
        "H100-80GB",
    )
    assert h.traits == ["CUSTOM_GPU_H100"]
    assert h.capabilities == {"gpu_model": "H100", "gpu_count": "8"}
    assert h.gpu_count == 8 and {d.source for d in h.devices} == {"capabilities"}
    assert h.devices[0].memory_mib == 81559 or h.devices[0].memory_mib  # from the catalog
    assert h.available and h.lease_id is None

    a = found[a100.id]
    assert a.model == "A100-80GB" and a.gpu_count == 4
    assert a.capabilities["boot_mode"] == "uefi"
    assert a.properties["cpus"] == 64
    # No inspection data was stored (the fake inspect interface stores none): the inventory call answers 404.
    assert all(d.source != "inspection" for d in a.devices)
    assert ironic_driver.discover(all_nodes=True)[0].node_id  # non-GPU nodes on request
    assert plain.id in {x.node_id for x in ironic_driver.discover(all_nodes=True)}


def test_deploy_with_config_drive_then_undeploy(
    ironic_driver: IronicDriver, ironic_conn: Any, make_node: Callable[..., Any]
) -> None:
    node = make_node()
    t0 = time.monotonic()
    result = ironic_driver.provision(_request(node, "lease-deploy-1"))
    deploy_s = time.monotonic() - t0
    assert result.provision_state == "active" and result.node_id == node.id and result.name == node.name
    assert result.addresses and result.addresses[0].startswith("mac:52:54:00")
    assert deploy_s < 10, f"deploy took {deploy_s:.1f} s: polling is not ours"

    raw = ironic_conn.baremetal.get_node(node.id)
    assert raw.extra[LEASE_TAG] == "lease-deploy-1"
    assert raw.instance_info["image_source"].endswith("gpu.qcow2")
    assert raw.instance_info["root_gb"] == "40"
    assert raw.instance_info[LEASE_TAG] == "lease-deploy-1"
    # Ironic keeps the config drive in instance_info (masked in API responses).
    assert "configdrive" in raw.instance_info
    host = ironic_driver.host(node.id)
    assert host.lease_id == "lease-deploy-1" and not host.available

    # Idempotent: provisioning the same lease again returns the active node without another deploy.
    again = ironic_driver.provision(_request(node, "lease-deploy-1"))
    assert again.node_id == node.id
    # Another lease cannot take it.
    with pytest.raises(ProvisioningFailed, match="tagged for lease lease-deploy-1"):
        ironic_driver.provision(_request(node, "lease-other"))

    released = ironic_driver.release(node.id, POLL, lease_id="lease-deploy-1")
    assert released.provision_state == "available"
    raw = ironic_conn.baremetal.get_node(node.id)
    assert LEASE_TAG not in (raw.extra or {}) and LEASE_TAG not in (raw.instance_info or {})
    assert ironic_driver.tagged() == [] or node.id not in {t.id for t in ironic_driver.tagged()}


def test_config_drive_carries_token_controller_and_ssh_key() -> None:
    from drivers.openstack.configdrive import ironic_config_drive

    drive = ironic_config_drive("lease-9", "node-uuid", "gpu-1", _bootstrap())
    assert drive["meta_data"]["meta"][LEASE_TAG] == "lease-9"
    assert drive["meta_data"]["public_keys"]["key-0"].startswith("ssh-ed25519")
    assert "GPUFABRIC_BOOTSTRAP_TOKEN=bt-secret-123" in drive["user_data"]
    assert "GPUFABRIC_CONTROLLER_URL=https://gpufabric.test:8443" in drive["user_data"]


def test_deploy_timeout_puts_node_into_maintenance_with_the_reason(
    ironic_driver: IronicDriver, ironic_conn: Any, make_node: Callable[..., Any]
) -> None:
    node = make_node()
    with pytest.raises(ProvisioningTimeout) as err:
        ironic_driver.provision(_request(node, "lease-slow", poll=PollPolicy(interval_s=0.005, timeout_s=0.01)))
    assert "did not reach active within 0.01 s" in err.value.reason
    raw = ironic_conn.baremetal.get_node(node.id)
    assert raw.is_maintenance
    assert raw.maintenance_reason == err.value.reason
    assert "lease-slow" in raw.maintenance_reason
    # A node in maintenance is not offered to another lease.
    wait_state(ironic_conn, node.id, "active")
    with pytest.raises(ProvisioningFailed):
        ironic_driver.provision(_request(node, "lease-next"))
    # Reconciliation: the lease failed, so the node is an orphan; finishing the interrupted lease rolls it back.
    orphans = find_orphans(ironic_driver.tagged(), {"lease-slow": "failed"})
    assert [o.resource.id for o in orphans] == [node.id]
    recovery = finish_or_rollback("lease-slow", "provisioning", ironic_driver.tagged(), ironic=ironic_driver, poll=POLL)
    assert recovery.decision == "rollback" and recovery.rolled_back, recovery.message
    raw = ironic_conn.baremetal.get_node(node.id)
    assert raw.provision_state == "available" and LEASE_TAG not in (raw.extra or {})


def test_deploy_refused_by_ironic_is_a_provisioning_failure(
    ironic_driver: IronicDriver, ironic_conn: Any, make_node: Callable[..., Any]
) -> None:
    node = make_node()
    ironic_conn.baremetal.set_node_provision_state(node.id, "manage")
    wait_state(ironic_conn, node.id, "manageable")
    with pytest.raises(ProvisioningFailed, match="not available"):
        ironic_driver.provision(_request(node, "lease-x"))


def test_orphans_and_interrupted_lease_is_finished(
    ironic_driver: IronicDriver, ironic_conn: Any, make_node: Callable[..., Any]
) -> None:
    live, gone = make_node(), make_node()
    ironic_driver.provision(_request(live, "lease-live"))
    ironic_driver.provision(_request(gone, "lease-gone"))
    tagged = ironic_driver.tagged()
    orphans = find_orphans(tagged, {"lease-live": "ready"})
    assert [(o.resource.id, o.lease_state) for o in orphans if o.resource.id in (live.id, gone.id)] == [(gone.id, None)]
    assert "unknown to gpufabric" in orphans[0].message

    # A controller restart while lease-live was provisioning: the node is active with our tag -> finish.
    recovery = finish_or_rollback("lease-live", "provisioning", tagged, ironic=ironic_driver, poll=POLL)
    assert recovery.decision == "finish" and recovery.resource_id == live.id
    for node, lease in ((live, "lease-live"), (gone, "lease-gone")):
        ironic_driver.release(node.id, POLL, lease_id=lease)
