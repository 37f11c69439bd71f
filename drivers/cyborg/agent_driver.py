"""cyborg-agent driver ``gpufabric_gpu_driver``: the GPUs of the gpufabric agent's reported inventory as Cyborg
devices (one PCI attach handle each, resource class PGPU, traits ``OWNER_CYBORG``, ``CUSTOM_NVIDIA_<product id>``,
``CUSTOM_GPU_<model>``).

Enable it in cyborg.conf::

    [agent]
    enabled_drivers = gpufabric_gpu_driver
    [gpufabric]
    inventory_file = /var/lib/gpufabric/inventory.json

Runs inside cyborg-agent (it imports Cyborg); the file parsing is ``drivers.cyborg.devices``. A missing or broken
file reports no devices (and logs why) rather than failing the agent's periodic report: Cyborg then removes the
devices, as it would for GPUs that disappeared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cyborg.accelerator.common import utils as cyborg_utils
from cyborg.accelerator.drivers.driver import GenericDriver
from cyborg.common import constants
from cyborg.conf import CONF
from cyborg.objects.driver_objects import (
    driver_attach_handle,
    driver_attribute,
    driver_controlpath_id,
    driver_deployable,
    driver_device,
)
from oslo_config import cfg
from oslo_log import log as logging
from oslo_serialization import jsonutils

from drivers.cyborg.devices import RESOURCE_CLASS, CyborgGpu, InventoryError, read_inventory

LOG = logging.getLogger(__name__)

OPTS = [
    cfg.StrOpt(
        "inventory_file",
        default="/var/lib/gpufabric/inventory.json",
        help="The gpufabric agent's last reported inventory (inventory.json beside its state file).",
    ),
]
CONF.register_opts(OPTS, group="gpufabric")


def _attributes(gpu: CyborgGpu) -> list[Any]:
    attrs = [driver_attribute.DriverAttribute(key="rc", value=RESOURCE_CLASS)]
    attrs += [driver_attribute.DriverAttribute(key=f"trait{i}", value=t) for i, t in enumerate(gpu.traits)]
    return attrs


def _device(gpu: CyborgGpu, host: str) -> Any:
    pci = cyborg_utils.pci_str_to_json(gpu.address)
    handle = driver_attach_handle.DriverAttachHandle()
    handle.attach_type = constants.AH_TYPE_PCI
    handle.attach_info = pci
    handle.in_use = False
    deployable = driver_deployable.DriverDeployable()
    deployable.name = gpu.deployable_name(host)
    deployable.driver_name = "GPUFABRIC"
    deployable.num_accelerators = 1
    deployable.attribute_list = _attributes(gpu)
    deployable.attach_handle_list = [handle]
    cpid = driver_controlpath_id.DriverControlPathID()
    cpid.cpid_type = "PCI"
    cpid.cpid_info = pci
    device = driver_device.DriverDevice()
    device.vendor = gpu.vendor_id
    device.model = gpu.model
    device.type = constants.DEVICE_GPU
    device.std_board_info = jsonutils.dumps({"product_id": gpu.product_id, "controller": "3D controller"})
    device.vendor_board_info = jsonutils.dumps({"gpu_uuid": gpu.uuid, "source": "gpufabric-agent"})
    device.stub = False
    device.controlpath_id = cpid
    device.deployable_list = [deployable]
    return device


class GpufabricGPUDriver(GenericDriver):  # type: ignore[misc]
    """The gpufabric agent's GPUs, for cyborg-agent's periodic report to cyborg-conductor."""

    VENDOR = "nvidia"

    def discover(self) -> list[Any]:
        path = Path(CONF.gpufabric.inventory_file)
        try:
            gpus = read_inventory(path)
        except InventoryError as exc:
            LOG.error("gpufabric driver: no GPUs reported: %s", exc)
            return []
        return [_device(gpu, CONF.host) for gpu in gpus]

    def update(self, control_path: Any, image_path: Any) -> bool:
        return False  # GPUs are not programmed like FPGAs

    def get_stats(self) -> dict[str, Any]:
        return {}
