"""The agent's settings: one documented set of ``GPUFABRIC_*`` environment variables, plus an optional YAML file.

Precedence: command-line flags, then the environment, then the file (``GPUFABRIC_AGENT_CONFIG``, default
``/etc/gpufabric/agent.yaml`` when it exists; keys are the field names below, e.g. ``controller_url``), then the
defaults. ``deploy/systemd/gpufabric-agent.env`` and the DaemonSet set exactly these variables
(tests/agent/test_settings.py checks every one is read).

* ``GPUFABRIC_CONTROLLER_URL`` names the controller in both CLIs; the agent's old ``GPUFABRIC_CONTROLLER`` is still
  accepted, with a warning.
* The host name is ``GPUFABRIC_HOSTNAME``, else ``NODE_NAME`` (the DaemonSet sets it from the downward API, so a
  pod registers under its node's name, not the pod's), else this machine's name.
* On Kubernetes (``GPUFABRIC_KUBERNETES``, default ``auto``: in a pod, or with ``GPUFABRIC_KUBE_API_URL`` or
  ``GPUFABRIC_KUBECONFIG``) the agent labels the Node ``GPUFABRIC_NODE_NAME``, else ``NODE_NAME``, else the host
  name, and follows ``nvidia.com/mig.config`` when ``GPUFABRIC_MIG_CONFIG_FILE`` names the mig-parted file.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

CONFIG_FILE_ENV = "GPUFABRIC_AGENT_CONFIG"
DEFAULT_CONFIG_FILE = Path("/etc/gpufabric/agent.yaml")
DEPRECATED_CONTROLLER_ENV = "GPUFABRIC_CONTROLLER"
STATE_FILE_NAME = "agent.json"


class AgentSettingsError(ValueError):
    """A setting is wrong; the message names the variable or file key."""


def config_file() -> Path | None:
    named = os.environ.get(CONFIG_FILE_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise AgentSettingsError(f"{CONFIG_FILE_ENV}={named}: no such file")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


class AgentSettings(BaseSettings):
    # Aliases are environment variable names only: environment names match case-insensitively, so an alias
    # "hostname" would read the HOSTNAME every shell and pod sets (a pod's name, not its node's). File keys and
    # flags are the field names (populate_by_name).
    model_config = SettingsConfigDict(
        env_prefix="GPUFABRIC_", extra="forbid", populate_by_name=True, env_ignore_empty=True
    )

    controller_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("GPUFABRIC_CONTROLLER_URL", DEPRECATED_CONTROLLER_ENV),
        description="Controller base URL",
    )
    bootstrap_token: str | None = Field(
        default=None, description="Fleet bootstrap token, exchanged for a per-host credential at registration"
    )
    backend: str | None = Field(default=None, description="Name of the backend (as registered) the host belongs to")
    hostname: str | None = Field(
        default=None,
        validation_alias=AliasChoices("GPUFABRIC_HOSTNAME", "NODE_NAME"),
        description="Name to register as",
    )
    state_dir: Path | None = Field(default=None, description="Where the agent keeps its credential and progress")
    report_interval: float | None = Field(
        default=None, gt=0, description="Seconds between reports (default: what the controller says)"
    )
    interval_jitter: float = Field(
        default=0.1,
        ge=0,
        le=0.5,
        validation_alias=AliasChoices("GPUFABRIC_AGENT_INTERVAL_JITTER"),
        description="Spread of each wait between reports, as a fraction of the interval",
    )
    startup_splay: float = Field(
        default=0.0,
        ge=0,
        validation_alias=AliasChoices("GPUFABRIC_AGENT_STARTUP_SPLAY"),
        description="Random wait before the first report, seconds",
    )
    health_rules: Path | None = Field(default=None, description="Health rules YAML (docs/health.md)")
    ca_bundle: Path | None = Field(default=None, description="CA bundle to verify the controller's certificate")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    labels: dict[str, str] = Field(default_factory=dict, description="Labels sent at registration")
    kubernetes: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Label this host's Node and follow nvidia.com/mig.config: auto (in a pod, or with "
        "kube_api_url / kubeconfig set), on, off",
    )
    kubeconfig: Path | None = Field(default=None, description="kubeconfig file to reach the API server with")
    kube_api_url: str | None = Field(
        default=None, description="API server URL without credentials (kubectl proxy); wins over kubeconfig"
    )
    node_name: str | None = Field(
        default=None, description="The Node to label (default: NODE_NAME, else the host name; see kube_node_name)"
    )
    mig_config_file: Path | None = Field(
        default=None,
        description="mig-parted file (a mounted ConfigMap) that nvidia.com/mig.config names configs in; "
        "unset: the agent leaves that label alone",
    )
    mig_strategy: Literal["none", "single", "mixed"] | None = Field(
        default=None, description="The device plugin's MIG strategy, for the GFD labels (default: none)"
    )
    device_access: bool = Field(
        default=False,
        description="Enforce leases on the device nodes: a per-lease group may open exactly the leased nodes "
        "(docs/security.md)",
    )
    dev_root: Path = Field(default=Path("/dev"), description="Where the driver's device nodes are")
    mig_minors_file: Path = Field(
        default=Path("/proc/driver/nvidia-caps/mig-minors"), description="The driver's MIG capability minors"
    )
    access_groups: list[str] = Field(
        default_factory=list,
        description="Pre-existing groups to hand out to leases (JSON list); empty: the agent creates gf-<lease> "
        "system groups",
    )
    access_idle_group: str = Field(default="root", description="Group of device nodes no lease holds (mode 0600)")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    @property
    def state_file(self) -> Path | None:
        return self.state_dir / STATE_FILE_NAME if self.state_dir else None

    @property
    def kube_node_name(self) -> str:
        """The Node this agent labels: ``GPUFABRIC_NODE_NAME``, else ``NODE_NAME`` (the DaemonSet's downward API
        value, read directly: the ``hostname`` setting may be overridden), else the host name."""
        return self.node_name or os.environ.get("NODE_NAME") or self.hostname or socket.gethostname()


def load_settings(**overrides: Any) -> AgentSettings:
    """The settings from flags (``overrides``; None means "not given"), the environment and the file."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if os.environ.get(DEPRECATED_CONTROLLER_ENV) and not os.environ.get("GPUFABRIC_CONTROLLER_URL"):
        message = f"{DEPRECATED_CONTROLLER_ENV} is deprecated: set GPUFABRIC_CONTROLLER_URL (both CLIs read it)"
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        logging.getLogger("gpufabric.agent").warning(message)
    try:
        return AgentSettings(**given)
    except ValidationError as exc:
        where = "; ".join(f"{_name(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise AgentSettingsError(f"agent settings: {where}") from None


_ENV_NAMES = {
    "controller_url": "GPUFABRIC_CONTROLLER_URL",
    "hostname": "GPUFABRIC_HOSTNAME",
    "interval_jitter": "GPUFABRIC_AGENT_INTERVAL_JITTER",
    "startup_splay": "GPUFABRIC_AGENT_STARTUP_SPLAY",
}


def _name(loc: tuple[Any, ...]) -> str:
    """A setting's file key and environment variable, for error messages."""
    field = str(loc[0]) if loc else "?"
    if field.startswith("GPUFABRIC_") or field == "NODE_NAME":
        return field
    if field not in AgentSettings.model_fields:
        return f"{field} (unknown setting)"
    return f"{field} ({_ENV_NAMES.get(field, 'GPUFABRIC_' + field.upper())})"
