"""The stored config of a ``nova`` backend (``NovaBackend.config_model``)."""

from __future__ import annotations

from pydantic import Field, field_validator

from controller.backends.openstack.config import NovaServersConfig
from drivers.openstack import product_for_name


class NovaConfig(NovaServersConfig):
    """Nova compute hosts that pass whole GPUs through (PCI alias flavors) or split them into vGPUs."""

    pci_alias_models: dict[str, str] = Field(
        default_factory=dict,
        description="PCI alias name -> GPU model (catalog name), for aliases whose name says nothing (a100 -> "
        "'A100 80GB PCIe')",
    )
    pci_alias_resource_classes: dict[str, str] = Field(
        default_factory=dict,
        description="PCI alias -> Placement resource class ([pci] alias resource_class), for capacity checks",
    )
    vgpu_types: dict[str, str] = Field(
        default_factory=dict,
        description="GPU model -> vGPU type the pGPUs of that model are configured with ([devices] "
        "enabled_mdev_types), e.g. {'A40': 'A40-8C'}; default: the catalog type with as many instances as "
        "Placement's VGPU total",
    )

    @field_validator("pci_alias_models")
    @classmethod
    def _known_alias_models(cls, value: dict[str, str]) -> dict[str, str]:
        for alias, model in value.items():
            if product_for_name(model) is None:
                raise ValueError(f"{alias}: {model!r} is not a GPU model the catalog knows")
        return value

    @field_validator("vgpu_types")
    @classmethod
    def _known_vgpu_models(cls, value: dict[str, str]) -> dict[str, str]:
        for model in value:
            if product_for_name(model) is None:
                raise ValueError(f"{model!r} is not a GPU model the catalog knows")
        return value
