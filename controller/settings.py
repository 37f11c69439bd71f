"""Controller settings: ``GPUFABRIC_*`` environment variables over a YAML/TOML config file over defaults."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "gpufabric"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GPUFABRIC_", extra="forbid")

    data_dir: Path = Field(default_factory=_default_data_dir, description="Where the SQLite file lives")
    backend_kinds: list[str] | None = Field(
        default=None,
        description="Backend kinds this controller serves (static, ironic, nova, eks, fake); default: every kind it "
        "ships but fake (simulated hosts for demos and tests, opt-in)",
    )
    database_url: str = Field(default="", description="SQLAlchemy URL; default sqlite:///<data_dir>/controller.db")
    bind_host: str = "127.0.0.1"
    bind_port: int = 8080
    keep_alive_s: int = Field(
        default=75,
        ge=1,
        description="Idle HTTP keep-alive; keep it above any client or load balancer idle timeout (ALB: 60 s) so the "
        "server never closes a connection a client is about to reuse",
    )
    public_url: str = Field(default="", description="URL agents and users reach; default from bind")
    heartbeat_timeout_s: float = Field(default=90.0, gt=0, description="Silence after which a host is unreachable")
    report_interval_s: float = Field(default=30.0, gt=0, description="Interval told to agents")
    sweep_interval_s: float = Field(default=15.0, gt=0)
    scheduler_enabled: bool = True
    leader_lease_s: float = Field(default=30.0, gt=0, description="Scheduler leadership lease across replicas")
    instance_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}")
    log_level: str = "INFO"
    log_json: bool = True
    db_pool_size: int = Field(default=20, description="Persistent PostgreSQL connections per process")
    auth_cache_ttl_s: float = Field(
        default=0.5,
        ge=0,
        le=1.0,
        description="Cache successful admin, tenant and bootstrap token lookups this long (at most 1 s): a token "
        "revoked by another process or replica stops working within it; 0: no auth cache at all",
    )
    agent_auth_cache_ttl_s: float = Field(
        default=3600.0,
        ge=0,
        description="Cache agent credentials this long; re-registration or deletion of the host drops them on every "
        "replica within change_poll_s (the host change feed), so this only bounds memory of idle hosts",
    )
    last_seen_flush_s: float = Field(
        default=1.0, ge=0, description="Batch heartbeat last_seen writes at this interval; 0: write in the request"
    )
    max_request_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Larger request bodies are refused with 413 (every route)"
    )
    max_lease_duration_s: int = Field(
        default=90 * 86400,
        ge=60,
        le=100 * 365 * 86400,
        description="Longest lease a tenant may ask for (a request's duration); longer is refused with 422",
    )
    agent_max_in_flight: int = Field(
        default=256,
        ge=1,
        description="Agent requests handled at once per worker process; more are answered 503 with Retry-After",
    )
    agent_retry_after_s: float = Field(
        default=5.0, gt=0, description="Retry-After told to shed agents (spread over [value, 2 x value])"
    )
    instance_heartbeat_s: float = Field(
        default=5.0, gt=0, description="How often this process refreshes its liveness row (controller_instances)"
    )
    instance_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description="A controller whose liveness row is older than this is gone: leases it was driving are taken over",
    )
    lease_recovery_interval_s: float = Field(
        default=10.0, gt=0, description="How often the leader finishes or fails leases stranded by a crash"
    )
    lease_placing_timeout_s: float = Field(default=300.0, gt=0, description="Deadline of the placing state")
    lease_provisioning_timeout_s: float = Field(
        default=1800.0,
        gt=0,
        description="A lease still provisioning after this is released at its backend and failed with the reason",
    )
    lease_releasing_timeout_s: float = Field(
        default=600.0, gt=0, description="A release still running after this is driven again by the recovery job"
    )
    change_poll_s: float = Field(
        default=0.5,
        gt=0,
        description="How often a replica polls the store's host change feed for other replicas' writes (bounds how "
        "late a desired-state change made on one replica reaches agents heartbeating to another)",
    )

    # Sign-in with the identity systems clouds already use (docs/identity.md). gpufabric's own tokens always work.
    oidc_issuer: str = Field(
        default="", description="OIDC: the issuer (`iss`) bearer JWTs must carry; empty: OIDC sign-in off"
    )
    oidc_audience: str = Field(default="", description="OIDC: the audience (`aud`) bearer JWTs must be issued for")
    oidc_jwks_url: str = Field(default="", description="OIDC: the provider's JSON Web Key Set (HTTPS in production)")
    oidc_jwks_cache_s: float = Field(
        default=300.0, gt=0, description="OIDC: how long the key set is kept before it is fetched again"
    )
    oidc_jwks_min_refresh_s: float = Field(
        default=5.0,
        ge=0,
        description="OIDC: a token signed by a key not in the cached set fetches the set again (key rotation), at "
        "most this often",
    )
    keystone_url: str = Field(
        default="", description="OpenStack Keystone: the identity v3 endpoint's base URL; empty: Keystone sign-in off"
    )
    keystone_token_cache_s: float = Field(
        default=30.0,
        ge=0,
        description="Keystone: a validated token is trusted this long without asking Keystone again (the bound for "
        "a revocation in Keystone to take effect); 0: ask every time",
    )
    identity_timeout_s: float = Field(
        default=5.0, gt=0, description="HTTP timeout of calls to the OIDC provider's key set and to Keystone"
    )
    identity_mapping_file: Path | None = Field(
        default=None,
        description="YAML mapping OIDC claims and Keystone projects/roles to gpufabric tenants and roles "
        "(docs/identity.md); required when OIDC or Keystone sign-in is on",
    )

    lease_access_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s), comma-separated, that encrypt what leases hand out (kubeconfigs, tokens) in the "
        "store; the first encrypts, all decrypt (rotation). Unset: a key made once in <data_dir>/lease-access.key. "
        "Replicas must share it",
    )

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'controller.db'}"
        if not self.public_url:
            host = "127.0.0.1" if self.bind_host in ("0.0.0.0", "::") else self.bind_host
            self.public_url = f"http://{host}:{self.bind_port}"
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from (highest first) ``overrides``, ``GPUFABRIC_*`` env, ``config_file`` (.yaml/.yml/.toml)."""
    if config_file is not None and not config_file.is_file():
        raise FileNotFoundError(f"config file {config_file} does not exist")

    class _FileSettings(Settings):
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
            if config_file is not None:
                if config_file.suffix == ".toml":
                    sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
                else:
                    sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
            return tuple(sources)

    return Settings.model_validate(_FileSettings(**overrides).model_dump())
