"""Sign-in with outside identities: OIDC bearer JWTs and OpenStack Keystone tokens, mapped to gpufabric roles.

Built once per app from the settings (:meth:`ExternalIdentity.from_settings`). gpufabric's own tokens (``gft_``,
agent credentials ``gfa_``) never reach this module: ``controller.api.deps.Require`` looks them up as before, so
the agents' path is unchanged. Any other bearer token comes here when OIDC or Keystone is configured: a JWT goes to
the OIDC verifier, anything else to Keystone.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.auth.keystone import KeystoneUnavailable, KeystoneValidator
from controller.auth.mapping import IdentityMapping, load_mapping, map_keystone, map_oidc
from controller.auth.oidc import OidcVerifier, TokenRejected, looks_like_jwt
from controller.auth.tokens import AGENT_CREDENTIAL_PREFIX, API_TOKEN_PREFIX, Principal
from controller.settings import Settings

__all__ = ["ExternalIdentity", "KeystoneUnavailable", "NotMapped", "TokenRejected"]

_OWN_PREFIXES = (f"{API_TOKEN_PREFIX}_", f"{AGENT_CREDENTIAL_PREFIX}_")


class NotMapped(Exception):
    """The identity is genuine, but no mapping rule gives it a gpufabric role."""


@dataclass
class ExternalIdentity:
    mapping: IdentityMapping
    oidc: OidcVerifier | None = None
    keystone: KeystoneValidator | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ExternalIdentity:
        """Raises ``ValueError`` (``MappingError``) for a half-configured provider or an unreadable mapping."""
        oidc = keystone = None
        if settings.oidc_issuer or settings.oidc_jwks_url or settings.oidc_audience:
            oidc = OidcVerifier(
                settings.oidc_issuer,
                settings.oidc_audience,
                settings.oidc_jwks_url,
                cache_s=settings.oidc_jwks_cache_s,
                min_refresh_s=settings.oidc_jwks_min_refresh_s,
                timeout_s=settings.identity_timeout_s,
            )
        if settings.keystone_url:
            keystone = KeystoneValidator(
                settings.keystone_url, cache_s=settings.keystone_token_cache_s, timeout_s=settings.identity_timeout_s
            )
        mapping = IdentityMapping()
        if oidc is not None or keystone is not None:
            if settings.identity_mapping_file is None:
                raise ValueError(
                    "OIDC or Keystone sign-in needs identity_mapping_file (GPUFABRIC_IDENTITY_MAPPING_FILE)"
                )
            mapping = load_mapping(settings.identity_mapping_file)
        return cls(mapping, oidc, keystone)

    def handles(self, token: str) -> bool:
        """Whether ``token`` is one for an outside identity system (not one of gpufabric's own)."""
        return (self.oidc is not None or self.keystone is not None) and not token.startswith(_OWN_PREFIXES)

    def authenticate(self, token: str) -> Principal:
        """The principal of a genuine, mapped outside token. Raises ``TokenRejected`` (not genuine), ``NotMapped``
        or ``KeystoneUnavailable``. Blocking (HTTP to the provider on a cache miss): call it off the event loop."""
        if looks_like_jwt(token) and self.oidc is not None:
            claims = self.oidc.verify(token)
            who = str(claims.get("preferred_username") or claims.get("email") or claims.get("sub") or "?")
            principal = map_oidc(self.mapping, claims, f"oidc:{who}")
            if principal is None:
                raise NotMapped(f"OIDC identity {who} matches no rule of the identity mapping")
            return principal
        if self.keystone is not None:
            found = self.keystone.validate(token)
            project = str(found.project.get("name") or found.project.get("id"))
            principal = map_keystone(self.mapping, found.project, found.roles, f"keystone:{found.user}@{project}")
            if principal is None:
                roles = ", ".join(sorted(found.roles)) or "none"
                raise NotMapped(
                    f"Keystone user {found.user} on project {project} (roles: {roles}) matches no rule of the "
                    "identity mapping"
                )
            return principal
        raise TokenRejected("not a JWT, and Keystone sign-in is off")
