"""ServiceAccount tokens and namespaced RBAC for the Kubernetes API emulator (devservices/kube_emulator/).

What kube-apiserver does for a ServiceAccount, reduced to what a tenant's kubeconfig exercises:

- ``POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token`` (the TokenRequest API) issues a bearer token bound
  to that ServiceAccount's uid, with ``status.expirationTimestamp``.
- A request bearing such a token is authenticated as ``system:serviceaccount:<ns>:<name>``: once the ServiceAccount
  is gone (deleted, or its namespace deleted) or was replaced (another uid), or the token expired, it is **401
  Unauthorized**, as kube-apiserver answers a token whose bound object no longer exists.
- It is then authorized by the Roles bound to it by RoleBindings *in the namespace of the request* (RBAC ``Role``
  rules: ``apiGroups``, ``resources`` with ``<resource>/<subresource>``, ``verbs``, ``resourceNames``, ``*``): a
  request nothing allows is **403 Forbidden** with kube-apiserver's message. ClusterRoles and ClusterRoleBindings
  are not emulated, so a ServiceAccount can reach nothing cluster-scoped.

Any other request (no ``Authorization`` header, or a bearer token the emulator did not issue) is served as the
cluster admin, as before: the controller under test and the tests' own clients use the emulator that way.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devservices.kube_emulator import KubeState, ResourceType

RBAC_GROUP = "rbac.authorization.k8s.io"
DEFAULT_TOKEN_SECONDS = 3600


@dataclass(frozen=True)
class IssuedToken:
    namespace: str
    name: str
    uid: str
    expires: float  # epoch seconds

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"


class Unauthorized(Exception):
    """The bearer token names a ServiceAccount that is gone, or it expired: 401."""


class Forbidden(Exception):
    """No Role bound to the ServiceAccount allows the request: 403 with kube-apiserver's message."""


def verb_of(method: str, named: bool, watch: bool) -> str:
    if method == "GET":
        return "get" if named else ("watch" if watch else "list")
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())


class ServiceAccountTokens:
    """The tokens this emulator issued, and the RBAC check of requests that bear one."""

    def __init__(self) -> None:
        self.issued: dict[str, IssuedToken] = {}

    def issue(self, state: KubeState, namespace: str, name: str, body: Any) -> dict[str, Any]:
        from devservices.kube_emulator import RESOURCE_BY_PLURAL

        account = state.get(RESOURCE_BY_PLURAL[("", "serviceaccounts")], namespace, name)
        spec = (body or {}).get("spec") or {}
        seconds = int(spec.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS)
        token = secrets.token_urlsafe(32)
        self.issued[token] = IssuedToken(namespace, name, account["metadata"]["uid"], time.time() + seconds)
        expires = datetime.fromtimestamp(self.issued[token].expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
            "spec": {"audiences": spec.get("audiences") or [], "expirationSeconds": seconds},
            "status": {"token": token, "expirationTimestamp": expires},
        }

    def authenticate(self, state: KubeState, authorization: str | None) -> IssuedToken | None:
        """The ServiceAccount a bearer token was issued for; None for an admin request (no token of ours)."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        issued = self.issued.get(authorization.removeprefix("Bearer ").strip())
        if issued is None:
            return None
        key = ("", "serviceaccounts", issued.namespace, issued.name)
        with state.lock:
            account = state.objects.get(key)
        if account is None or account["metadata"]["uid"] != issued.uid or time.time() >= issued.expires:
            raise Unauthorized()
        return issued

    def authorize(
        self,
        state: KubeState,
        who: IssuedToken,
        verb: str,
        rtype: ResourceType,
        namespace: str | None,
        name: str | None,
        subresource: str | None,
    ) -> None:
        resource = f"{rtype.plural}/{subresource}" if subresource else rtype.plural
        if namespace is not None and any(
            _allows(rule, verb, rtype.group, resource, name) for rule in self._rules(state, who, namespace)
        ):
            return
        where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
        raise Forbidden(
            f'{rtype.plural} is forbidden: User "{who.user}" cannot {verb} resource "{resource}" '
            f'in API group "{rtype.group}"{where}'
        )

    @staticmethod
    def _rules(state: KubeState, who: IssuedToken, namespace: str) -> list[dict[str, Any]]:
        with state.lock:
            objects = dict(state.objects)
        rules: list[dict[str, Any]] = []
        for (group, plural, ns, _name), binding in objects.items():
            if (group, plural, ns) != (RBAC_GROUP, "rolebindings", namespace):
                continue
            subjects = binding.get("subjects") or []
            if not any(
                s.get("kind") == "ServiceAccount"
                and s.get("name") == who.name
                and s.get("namespace", namespace) == who.namespace
                for s in subjects
            ):
                continue
            ref = binding.get("roleRef") or {}
            if ref.get("kind") != "Role":
                continue  # ClusterRoles are not emulated
            role = objects.get((RBAC_GROUP, "roles", namespace, ref.get("name", "")))
            if role is not None:
                rules.extend(role.get("rules") or [])
        return rules


def _matches(allowed: list[str] | None, value: str) -> bool:
    return bool(allowed) and ("*" in allowed or value in allowed)  # type: ignore[operator]


def _allows(rule: dict[str, Any], verb: str, group: str, resource: str, name: str | None) -> bool:
    if not (_matches(rule.get("verbs"), verb) and _matches(rule.get("apiGroups"), group)):
        return False
    if not _matches(rule.get("resources"), resource):
        return False
    names = rule.get("resourceNames")
    return not names or (name is not None and name in names)
