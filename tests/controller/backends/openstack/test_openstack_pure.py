"""Pure parts of drivers.openstack: inspection inventories, flavor extra specs, catalog mapping, auth config,
reconciliation decisions, polling. The API-facing parts are tested against real services in
tests/controller/backends/openstack."""

from __future__ import annotations

import pydantic
import pytest

from drivers.openstack import (
    NoMatchingFlavor,
    OpenStackAuth,
    OpenStackConfigError,
    PollPolicy,
    TaggedResource,
    connect,
    connection_kwargs,
    decide,
    find_missing,
    flavor_from_specs,
    host_from_node,
    match_flavor,
    parse_pci_alias,
    product_for_pci,
    vgpu_type_for,
)
from drivers.openstack.polling import PollTimeout, poll

# What GET /v1/nodes/{node}/inventory returns after an ironic-python-agent inspection with the pci-devices collector.
INVENTORY = {
    "inventory": {"cpu": {"count": 96}, "memory": {"physical_mb": 2097152}, "interfaces": []},
    "plugin_data": {
        "pci_devices": [
            {"vendor_id": "10de", "product_id": "2330", "class": "030200", "revision": "a1", "bus": f"0000:{b}:00.0"}
            for b in ("1b", "18", "43", "52")
        ]
        + [
            {"vendor_id": "15b3", "product_id": "1021", "class": "020700", "bus": "0000:19:00.0"},  # ConnectX-7
            {
                "vendor_id": "10de",
                "product_id": "22a3",
                "class": "068000",
                "bus": "0000:05:00.0",
            },  # NVSwitch: not a GPU
        ]
    },
}


def test_inspection_inventory_gives_devices_with_catalog_facts() -> None:
    node = {"id": "n1", "name": "gpu-1", "resource_class": "baremetal-gpu-h100", "traits": ["CUSTOM_GPU_H100"]}
    host = host_from_node(node, INVENTORY)
    assert host.gpu_count == 4 and host.model == "H100-80GB"
    assert [d.pci_address for d in host.devices] == [f"0000:{b}:00.0" for b in ("18", "1b", "43", "52")]
    assert {d.source for d in host.devices} == {"inspection"}
    assert host.devices[0].device_id == "2330" and host.devices[0].memory_mib


@pytest.mark.parametrize(
    ("device", "model"),
    [(0x2330, "H100-80GB"), (0x20B0, "A100-40GB"), (0x20B2, "A100-80GB"), (0x20B5, "A100-80GB"), (0x27B8, "L4")],
)
def test_pci_device_ids_map_to_catalog_models(device: int, model: str) -> None:
    product = product_for_pci("10de", f"{device:04x}")
    assert product is not None and product.model == model
    assert product_for_pci("8086", f"{device:04x}") is None


def test_resource_class_trait_and_capabilities_without_inventory() -> None:
    by_rc = host_from_node({"id": "a", "resource_class": "baremetal-gpu-a100-80gb", "properties": {}})
    assert by_rc.model == "A100-80GB" and by_rc.gpu_count == 1 and by_rc.devices[0].source == "resource_class"
    by_caps = host_from_node(
        {
            "id": "b",
            "resource_class": "gpu",
            "properties": {"capabilities": "boot_mode:uefi,gpu_model:L40S,gpu_count:8"},
        }
    )
    assert by_caps.model == "L40S" and by_caps.gpu_count == 8 and by_caps.capabilities["boot_mode"] == "uefi"
    tagged = host_from_node({"id": "c", "extra": {"gpufabric_lease": "L7"}, "traits": ["CUSTOM_GPU_H100"]})
    assert tagged.lease_id == "L7" and tagged.devices[0].source == "trait"


def test_flavor_extra_specs() -> None:
    assert parse_pci_alias("a100:2, t4") == {"a100": 2, "t4": 1}
    vgpu = flavor_from_specs("1", "v", {"resources:VGPU": "1", "trait:CUSTOM_VGPU_L4_8C": "required"})
    assert vgpu is not None and vgpu.kind == "vgpu" and vgpu.model == "L4"
    assert vgpu.vgpu is not None and (vgpu.vgpu.framebuffer_mib, vgpu.vgpu.max_instances) == (8192, 3)
    granular = flavor_from_specs(
        "2", "g", {"resources1:VGPU": "2", "trait1:CUSTOM_GPU_A100": "required", "trait:CUSTOM_X": "forbidden"}
    )
    assert granular is not None and granular.count == 2 and granular.model == "A100-40GB"
    assert granular.forbidden_traits == ["CUSTOM_X"] and granular.vgpu is None  # the flavor names no vGPU type
    pci_rc = flavor_from_specs("3", "c", {"resources:CUSTOM_GPU_H100": "8"})
    assert pci_rc is not None and (pci_rc.kind, pci_rc.count, pci_rc.model) == ("gpu", 8, "H100-80GB")
    hinted = flavor_from_specs("4", "h", {"pci_passthrough:alias": "gpu:1", "gpufabric:gpu_model": "L40S"})
    assert hinted is not None and hinted.model == "L40S"
    assert flavor_from_specs("5", "plain", {"hw:cpu_policy": "dedicated", "resources:VCPU": "4"}) is None
    assert vgpu_type_for("nvidia-L40S-6C") is not None

    flavors = [vgpu, granular, pci_rc, hinted]
    assert match_flavor(flavors, "gpu", 8, model="H100").flavor_id == "3"
    assert match_flavor(flavors, "vgpu", 1, vgpu_type="L4-8C").flavor_id == "1"
    with pytest.raises(NoMatchingFlavor, match="no flavor gives 2 x gpu"):
        match_flavor(flavors, "gpu", 2)


def test_auth_config_errors_name_the_field(tmp_path: object) -> None:
    with pytest.raises(pydantic.ValidationError, match="auth_url is required"):
        OpenStackAuth(method="password", username="u", password="p", project_name="x")
    with pytest.raises(pydantic.ValidationError, match="endpoints is required"):
        OpenStackAuth(method="none")
    with pytest.raises(pydantic.ValidationError, match="unknown service type 'baremetl'"):
        OpenStackAuth(method="none", endpoints={"baremetl": "http://x"})
    with pytest.raises(OpenStackConfigError) as err:
        connect(OpenStackAuth(method="cloud", cloud="nope", clouds_yaml="/nonexistent/clouds.yaml"))
    assert err.value.field == "clouds_yaml"
    kw = connection_kwargs(
        OpenStackAuth(
            method="application_credential",
            auth_url="https://k/v3",
            application_credential_id="i",
            application_credential_secret="s",
        )
    )
    assert kw["auth_type"] == "v3applicationcredential" and kw["auth"]["application_credential_secret"] == "s"
    kw = connection_kwargs(
        OpenStackAuth(
            method="admin_token", token="admin", endpoints={"placement": "http://p"}, api_versions={"placement": "1.39"}
        )
    )
    assert kw["placement_endpoint_override"] == "http://p" and kw["placement_api_version"] == "1.39"


def test_unknown_cloud_in_clouds_yaml_names_cloud(tmp_path: pytest.TempPathFactory) -> None:
    import pathlib

    path = pathlib.Path(str(tmp_path)) / "clouds.yaml"
    path.write_text("clouds:\n  prod:\n    auth_type: none\n    baremetal_endpoint_override: http://127.0.0.1:1\n")
    assert connect(OpenStackAuth(method="cloud", cloud="prod", clouds_yaml=path)) is not None
    with pytest.raises(OpenStackConfigError) as err:
        connect(OpenStackAuth(method="cloud", cloud="staging", clouds_yaml=path))
    assert err.value.field == "cloud"


def _r(kind: str, state: str, maintenance: bool = False, rid: str = "x") -> TaggedResource:
    return TaggedResource(kind=kind, id=rid, name=rid, lease_id="L", state=state, maintenance=maintenance)  # type: ignore[arg-type]


def test_recovery_decisions() -> None:
    assert decide(_r("ironic_node", "active"), "provisioning") == "finish"
    assert decide(_r("ironic_node", "active", maintenance=True), "provisioning") == "rollback"
    assert decide(_r("ironic_node", "deploying"), "provisioning") == "wait"
    assert decide(_r("ironic_node", "deploy failed"), "provisioning") == "rollback"
    assert decide(_r("nova_server", "BUILD"), "provisioning") == "wait"
    assert decide(_r("nova_server", "ERROR"), "provisioning") == "rollback"
    assert decide(None, "provisioning") == "rollback"
    assert decide(_r("nova_server", "ACTIVE"), "ready") == "nothing"
    missing = find_missing(
        [_r("nova_server", "ACTIVE", rid="s1")], {"L": ("nova_server", "s2"), "M": ("ironic_node", None)}
    )
    assert [(m.lease_id, m.expected_id) for m in missing] == [("L", "s2"), ("M", None)]


def test_poll_uses_the_callers_interval_and_deadline() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    assert (
        poll(lambda: now[0], lambda t: t >= 0.3, PollPolicy(interval_s=0.1, timeout_s=5), lambda: now[0], sleep) >= 0.3
    )
    assert sleeps == [0.1, 0.1, 0.1]
    with pytest.raises(PollTimeout):
        poll(lambda: "deploying", lambda s: False, PollPolicy(interval_s=1, timeout_s=2.5), lambda: now[0], sleep)
