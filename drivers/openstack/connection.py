"""Build an openstacksdk ``Connection`` from gpufabric's backend configuration.

Five ways in, chosen by ``method``:

- ``cloud``: a named cloud from ``clouds.yaml`` (the standard search path, or ``clouds_yaml`` for a file);
- ``password``: Keystone v3 password;
- ``application_credential``: Keystone v3 application credential (the recommended way for a service);
- ``none``: no authentication (standalone Ironic with ``auth_strategy = noauth``); every service's URL is given in
  ``endpoints``;
- ``admin_token``: a fixed token (standalone Placement with ``noauth2`` takes ``admin``), also with ``endpoints``.

``endpoints`` (service type -> URL) overrides the catalog for any method; ``api_versions`` pins microversions
(``placement: "1.39"``). Errors name the field: a ``pydantic.ValidationError`` for the model, an
``OpenStackConfigError`` (``.field``) when openstacksdk rejects the combination (unknown cloud, bad clouds.yaml).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from drivers.openstack.errors import OpenStackCallFailed, OpenStackConfigError

AuthMethod = Literal["cloud", "password", "application_credential", "none", "admin_token"]
SERVICE_TYPES = ("baremetal", "compute", "placement", "image", "network", "identity", "accelerator")

_REQUIRED: dict[str, tuple[str, ...]] = {
    "cloud": ("cloud",),
    "password": ("auth_url", "username", "password"),
    "application_credential": ("auth_url", "application_credential_id", "application_credential_secret"),
    "none": ("endpoints",),
    "admin_token": ("token", "endpoints"),
}


class OpenStackAuth(BaseModel):
    """How gpufabric authenticates to one OpenStack cloud (or a standalone Ironic / Placement)."""

    model_config = ConfigDict(extra="forbid")

    method: AuthMethod
    cloud: str | None = None
    clouds_yaml: Path | None = None
    auth_url: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    user_domain_name: str = "Default"
    project_name: str | None = None
    project_id: str | None = None
    project_domain_name: str = "Default"
    application_credential_id: str | None = None
    application_credential_secret: SecretStr | None = None
    token: SecretStr | None = None
    region_name: str | None = None
    interface: Literal["public", "internal", "admin"] | None = None
    endpoints: dict[str, str] = Field(default_factory=dict)
    api_versions: dict[str, str] = Field(default_factory=dict)
    verify: bool | str = True
    timeout_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _check_method_fields(self) -> OpenStackAuth:
        for name in _REQUIRED[self.method]:
            value = getattr(self, name)
            if value is None or value == {} or value == "":
                raise ValueError(f"{name} is required when method is {self.method!r}")
        if self.method == "password" and not (self.project_name or self.project_id):
            raise ValueError("project_name or project_id is required when method is 'password'")
        for service in (*self.endpoints, *self.api_versions):
            if service not in SERVICE_TYPES:
                raise ValueError(f"unknown service type {service!r} (known: {', '.join(SERVICE_TYPES)})")
        return self


def connection_kwargs(auth: OpenStackAuth) -> dict[str, Any]:
    """The keyword arguments for ``openstack.connection.Connection`` (secrets revealed; do not log)."""
    kwargs: dict[str, Any] = {"verify": auth.verify, "api_timeout": auth.timeout_s}
    if auth.region_name:
        kwargs["region_name"] = auth.region_name
    if auth.interface:
        kwargs["interface"] = auth.interface
    if auth.method == "cloud":
        kwargs["cloud"] = auth.cloud
    elif auth.method == "password":
        assert auth.password is not None
        a: dict[str, Any] = {
            "auth_url": auth.auth_url,
            "username": auth.username,
            "password": auth.password.get_secret_value(),
            "user_domain_name": auth.user_domain_name,
            "project_domain_name": auth.project_domain_name,
        }
        if auth.project_id:
            a["project_id"] = auth.project_id
        else:
            a["project_name"] = auth.project_name
        kwargs.update(auth_type="password", auth=a)
    elif auth.method == "application_credential":
        assert auth.application_credential_secret is not None
        kwargs.update(
            auth_type="v3applicationcredential",
            auth={
                "auth_url": auth.auth_url,
                "application_credential_id": auth.application_credential_id,
                "application_credential_secret": auth.application_credential_secret.get_secret_value(),
            },
        )
    elif auth.method == "none":
        kwargs["auth_type"] = "none"
    else:
        assert auth.token is not None
        first = next(iter(auth.endpoints.values()))
        kwargs.update(auth_type="admin_token", auth={"token": auth.token.get_secret_value(), "endpoint": first})
    for service, url in auth.endpoints.items():
        kwargs[f"{service}_endpoint_override"] = url
    for service, version in auth.api_versions.items():
        kwargs[f"{service}_api_version"] = version
    return kwargs


def connect(auth: OpenStackAuth) -> Any:
    """An ``openstack.connection.Connection`` for ``auth``. Nothing is contacted until the first call."""
    import openstack.config.loader
    import openstack.connection
    import openstack.exceptions

    kwargs = connection_kwargs(auth)
    try:
        if auth.method == "cloud" and auth.clouds_yaml is not None:
            if not auth.clouds_yaml.is_file():
                raise OpenStackConfigError("clouds_yaml", f"no such file: {auth.clouds_yaml}")
            config = openstack.config.loader.OpenStackConfig(config_files=[str(auth.clouds_yaml)])
            cloud = kwargs.pop("cloud")
            region = config.get_one(cloud=cloud, **kwargs)
            return openstack.connection.Connection(config=region)
        return openstack.connection.Connection(**kwargs)
    except openstack.exceptions.ConfigException as e:
        field = "cloud" if auth.method == "cloud" else "method"
        raise OpenStackConfigError(field, str(e)) from e
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, OpenStackConfigError):
            raise
        raise OpenStackConfigError("method", f"openstacksdk rejected the {auth.method} configuration: {e}") from e


def service(conn: Any, name: str) -> Any:
    """``conn.<name>`` (``baremetal``, ``compute``, ``placement``): the proxy is made on first use, which may already
    authenticate and look the endpoint up; a Keystone or catalog failure then is an :class:`OpenStackCallFailed`
    naming the service, not a keystoneauth exception."""
    import keystoneauth1.exceptions as ksexc
    import openstack.exceptions as osexc

    try:
        return getattr(conn, name)
    except (ksexc.ClientException, osexc.SDKException) as e:
        raise OpenStackCallFailed(f"connect to {name}", f"{type(e).__name__}: {e}") from e
