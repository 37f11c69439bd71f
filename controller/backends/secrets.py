"""Which parts of a backend's config are secret, and the config as the API may show it.

A config field is secret when its kind's config schema says so: a ``SecretStr`` (OpenStack passwords, application
credential secrets, tokens) or a field declared with :data:`SECRET` (``json_schema_extra``; the EKS
``kube_token``); both appear as ``writeOnly`` in the JSON schema. Names that were secret before the schemas said
so stay masked too, for rows stored then. Beyond names, values are masked wherever they appear: URL userinfo in
any string (``http://admin:pw@keystone/v3``) and any secret field's value repeated in another field.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel

from controller.observability.redact import MASK, redact_text

SECRET: dict[str, Any] = {"writeOnly": True, "format": "password"}
"""``Field(json_schema_extra=SECRET)`` marks a plain ``str`` config field secret."""

# Names masked whatever the kind (rows stored before the schemas marked their secrets, a static backend's
# free-form config).
KNOWN_SECRET_NAMES = frozenset(
    {"password", "token", "application_credential_secret", "kube_token", "aws_secret_access_key", "aws_session_token"}
)
_MIN_SECRET_LEN = 4  # shorter values would mask ordinary words


def _is_secret(schema: dict[str, Any]) -> bool:
    if schema.get("writeOnly") is True:
        return True
    return any(_is_secret(s) for key in ("anyOf", "oneOf", "allOf") for s in schema.get(key, []))


@cache
def secret_field_names(model: type[BaseModel]) -> frozenset[str]:
    """Every property name the model's JSON schema (its nested models included) marks ``writeOnly``."""
    schema = model.model_json_schema(mode="validation")
    names: set[str] = set()
    for definition in [schema, *schema.get("$defs", {}).values()]:
        for name, prop in definition.get("properties", {}).items():
            if _is_secret(prop):
                names.add(name)
    return frozenset(names)


def _secret_values(config: Any, names: frozenset[str], found: set[str]) -> None:
    if isinstance(config, dict):
        for key, value in config.items():
            if key in names and isinstance(value, str) and len(value) >= _MIN_SECRET_LEN:
                found.add(value)
            else:
                _secret_values(value, names, found)
    elif isinstance(config, list):
        for value in config:
            _secret_values(value, names, found)


def _mask(config: Any, names: frozenset[str], values: list[str]) -> Any:
    if isinstance(config, dict):
        return {k: MASK if k in names and v else _mask(v, names, values) for k, v in config.items()}
    if isinstance(config, list):
        return [_mask(v, names, values) for v in config]
    if isinstance(config, str):
        text = redact_text(config)
        for secret in values:
            if secret in text:
                text = text.replace(secret, MASK)
        return text
    return config


def masked(config: Any, model: type[BaseModel] | None = None) -> Any:
    """``config`` as the API shows it: every secret field (by the model's schema, and the known names) ``***``,
    URL userinfo and repeated secret values masked in every other string."""
    names = KNOWN_SECRET_NAMES | (secret_field_names(model) if model is not None else frozenset())
    found: set[str] = set()
    _secret_values(config, names, found)
    return _mask(config, names, sorted(found, key=len, reverse=True))
