"""A nova virt driver for tests: nova's fake driver plus GPUs, as a real GPU compute node reports them.

- 2 nested physical-GPU resource providers ``<node>_pci_0000_8N_00_0`` with ``VGPU`` inventory (total and max_unit
  ``GPUFABRIC_FAKE_VGPUS``, default 8) and the traits in ``GPUFABRIC_FAKE_VGPU_TRAITS`` (comma-separated, default
  ``CUSTOM_GPU_A100``), through ``update_provider_tree`` - what the libvirt driver does for mdev-capable GPUs;
- 2 type-PCI NVIDIA devices 10de:20b5 (A100 80GB PCIe) at 0000:81:00.0 and 0000:81:01.0 in
  ``get_available_resource()['pci_passthrough_devices']``, which nova's PCI tracker (and, with ``[pci]
  report_in_placement``, Placement) takes from there.

- ``spawn`` writes the accelerators nova-compute hands it for a server (``accel_info``: the Cyborg ARQs bound to
  it, with their attach handles) to ``<state_path>/accel_info/<instance uuid>.json``, so tests see what a real
  driver would attach.

Based on ``FakeDriverWithoutFakeNodes`` (a stable node UUID in ``state_path``, so a restarted compute comes back).
Runs inside the Nova virtualenv; loaded as ``nova.virt.fake_gpu`` by ``run_nova_compute.py``.
"""

from __future__ import annotations

import os

from nova.conf import CONF
from nova.virt import fake
from oslo_serialization import jsonutils

PGPU_COUNT = 2
PCI_DEVICES = [
    {"address": f"0000:81:0{i}.0", "vendor_id": "10de", "product_id": "20b5", "dev_type": "type-PCI"} for i in range(2)
]


def _vgpus() -> int:
    return int(os.environ.get("GPUFABRIC_FAKE_VGPUS", "8"))


def _traits() -> list[str]:
    raw = os.environ.get("GPUFABRIC_FAKE_VGPU_TRAITS", "CUSTOM_GPU_A100")
    return [t.strip() for t in raw.split(",") if t.strip()]


class FakeGPUDriver(fake.FakeDriverWithoutFakeNodes):
    def update_provider_tree(self, provider_tree, nodename, allocations=None):  # type: ignore[no-untyped-def]
        super().update_provider_tree(provider_tree, nodename, allocations=allocations)
        total = _vgpus()
        for i in range(PGPU_COUNT):
            name = f"{nodename}_pci_0000_8{i}_00_0"
            if not provider_tree.exists(name):
                provider_tree.new_child(name, nodename)
            provider_tree.update_inventory(
                name,
                {
                    "VGPU": {
                        "total": total,
                        "reserved": 0,
                        "min_unit": 1,
                        "max_unit": total,
                        "step_size": 1,
                        "allocation_ratio": 1.0,
                    }
                },
            )
            provider_tree.update_traits(name, _traits())

    def spawn(  # type: ignore[no-untyped-def]
        self,
        context,
        instance,
        image_meta,
        injected_files,
        admin_password,
        allocations,
        network_info=None,
        block_device_info=None,
        power_on=True,
        accel_info=None,
    ):
        if accel_info:
            out = os.path.join(CONF.state_path, "accel_info")
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, f"{instance.uuid}.json"), "w") as fh:
                fh.write(jsonutils.dumps(accel_info))
        super().spawn(
            context,
            instance,
            image_meta,
            injected_files,
            admin_password,
            allocations,
            network_info=network_info,
            block_device_info=block_device_info,
            power_on=power_on,
            accel_info=accel_info,
        )

    def get_available_resource(self, nodename):  # type: ignore[no-untyped-def]
        resources = super().get_available_resource(nodename)
        if resources:
            devices = [
                {**d, "label": f"label_{d['vendor_id']}_{d['product_id']}", "numa_node": None, "parent_addr": None}
                for d in PCI_DEVICES
            ]
            resources["pci_passthrough_devices"] = jsonutils.dumps(devices)
        return resources
