"""The documents inside a desired state, parsed with the shared models: one check for both sides.

``MigDesired`` and ``SharingDesired`` carry the documents as plain mappings on the wire, so an agent can
always read a reply, even one holding a document an older or newer controller wrote. What the documents
must say is decided here, once: the controller refuses a write that does not parse (HTTP 422), the agent
reports a desired state that does not parse as a failed apply. Errors carry ``loc`` relative to the
``MigDesired`` / ``SharingDesired`` object (``("config", "mig-configs", "all-1g", 0, "mig-devices", "1g.5gbb")``,
``("selected",)``).
"""

from __future__ import annotations

from drivers.contract.errors import MigConfigError, SharingConfigError
from drivers.contract.mig import MigPartedConfig, mig_config_from_document
from drivers.contract.protocol import MigDesired, SharingDesired
from drivers.contract.sharing import DevicePluginConfig, parse_config

MIG_SOURCE = "mig.config"
SHARING_CONFIG_NAME = "sharing.config"


def parse_mig_desired(mig: MigDesired, source: str = MIG_SOURCE) -> MigPartedConfig:
    """The mig-parted document of ``mig``, validated, with ``mig.selected`` one of its configs."""
    try:
        config = mig_config_from_document(mig.config, source)
    except MigConfigError as exc:
        raise MigConfigError(str(exc), loc=("config", *exc.loc)) from None
    if mig.selected not in config.configs:
        known = ", ".join(sorted(config.configs))
        raise MigConfigError(
            f"selected: no config named {mig.selected!r:.80} in {source} (known: {known})", loc=("selected",)
        )
    return config


def parse_sharing_desired(sharing: SharingDesired, name: str = SHARING_CONFIG_NAME) -> DevicePluginConfig:
    """The device-plugin config of ``sharing``, validated as the device plugin would."""
    try:
        return parse_config(sharing.config, name)
    except SharingConfigError as exc:
        raise SharingConfigError(str(exc), loc=("config", *exc.loc)) from None
