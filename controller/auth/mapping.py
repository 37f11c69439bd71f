"""Who an outside identity is in gpufabric: rules mapping OIDC claims and Keystone projects and roles to a role and,
for tenants, a tenant (docs/identity.md). Read from ``identity_mapping_file`` (YAML)::

    oidc:
      - {claim: groups, value: gpu-admins, role: admin}
      - {claim: groups, value: gpu-acme, role: tenant, tenant: acme}
      - {claim: gpufabric_tenant, value: "*", role: tenant, tenant: "{value}"}
    keystone:
      - {project: admin, keystone_role: admin, role: admin}
      - {project: "acme-*", keystone_role: member, role: tenant, tenant: acme}
      - {project: "*", domain: Customers, keystone_role: member, role: tenant, tenant: "{project}"}

``value`` and ``project`` are shell-style patterns (``*``, ``?``, ``[...]``, case-sensitive); ``{value}`` and
``{project}`` in ``tenant`` are replaced by what matched. Rules are tried in order; the first that matches decides. An identity no rule matches is refused (403). Only the
roles ``admin`` and ``tenant`` can be given this way: agents and bootstrap tokens stay gpufabric's own.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from controller.auth.tokens import Principal, Role

PersonRole = Literal["admin", "tenant"]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: PersonRole
    tenant: str | None = Field(None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _tenant_for_tenants(self) -> _Rule:
        if self.role == "tenant" and not self.tenant:
            raise ValueError("a rule giving role tenant must name the tenant")
        if self.role == "admin" and self.tenant:
            raise ValueError("a rule giving role admin names no tenant")
        return self


class OidcRule(_Rule):
    claim: str = Field(min_length=1, description="A claim of the token: a string or a list of strings (groups)")
    value: str = Field(min_length=1, description='Pattern the value (or one of the list) must match; "*" any')


class KeystoneRule(_Rule):
    project: str = Field(min_length=1, description="Pattern of the project name or id the token is scoped to")
    domain: str | None = Field(None, description="The project's domain name or id (any when omitted)")
    keystone_role: str = Field(min_length=1, description="A role the user holds on that project")


class IdentityMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    oidc: list[OidcRule] = []
    keystone: list[KeystoneRule] = []


class MappingError(ValueError):
    """The mapping file cannot be read or is not valid."""


def load_mapping(path: Path) -> IdentityMapping:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return IdentityMapping.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise MappingError(f"identity mapping {path}: {exc}") from None


def _tenant(template: str | None, **values: str) -> str | None:
    if template is None:
        return None
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    return out[:128]


def _principal(role: PersonRole, tenant: str | None, name: str) -> Principal:
    if role == "admin":
        return Principal(role=Role.admin, name=name)
    return Principal(role=Role.tenant, name=name, tenant=tenant)


def map_oidc(mapping: IdentityMapping, claims: dict[str, Any], name: str) -> Principal | None:
    """The principal of a verified token's claims, by the first rule that matches (None: no rule does)."""
    for rule in mapping.oidc:
        raw = claims.get(rule.claim)
        values = [v for v in (raw if isinstance(raw, list) else [raw]) if isinstance(v, str) and v]
        for value in values:
            if fnmatchcase(value, rule.value):
                return _principal(rule.role, _tenant(rule.tenant, value=value), name)
    return None


def map_keystone(mapping: IdentityMapping, project: dict[str, Any], roles: list[str], name: str) -> Principal | None:
    """The principal of a validated Keystone token scoped to ``project`` with ``roles``, by the first matching rule."""
    project_name, project_id = str(project.get("name") or ""), str(project.get("id") or "")
    domain = project.get("domain") or {}
    domains = {str(domain.get("name") or ""), str(domain.get("id") or "")} - {""}
    for rule in mapping.keystone:
        if not any(fnmatchcase(p, rule.project) for p in (project_name, project_id) if p):
            continue
        if rule.domain is not None and rule.domain not in domains:
            continue
        if rule.keystone_role not in roles:
            continue
        return _principal(rule.role, _tenant(rule.tenant, project=project_name or project_id), name)
    return None
