"""GPU sharing: NVIDIA device-plugin configs (time-slicing, MPS), applying them, and slice offers."""

from agent.sharing.apply import ApplyReport, MpsSettings, apply_sharing, read_state, sharing_status
from agent.sharing.config import (
    DevicePluginConfig,
    load_config_file,
    load_configs,
    parse_config,
    select_config,
    to_configmap,
)
from agent.sharing.errors import SharingApplyError, SharingConfigError, SharingError
from agent.sharing.offers import annotate_offers, slice_offers

__all__ = [
    "ApplyReport",
    "DevicePluginConfig",
    "MpsSettings",
    "SharingApplyError",
    "SharingConfigError",
    "SharingError",
    "annotate_offers",
    "apply_sharing",
    "load_config_file",
    "load_configs",
    "parse_config",
    "read_state",
    "select_config",
    "sharing_status",
    "slice_offers",
    "to_configmap",
]
