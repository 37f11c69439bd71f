"""A paste filter that stands in for keystonemiddleware's ``authtoken`` in tests (Nova 34 has no noauth mode).

Every request is authenticated: the token ``<user>:<project>`` names the user and project, any other token (the
SDK's ``auth_type=none`` sends ``notused``) is the admin user in the ``admin`` project. Roles are admin, member and
reader, so policy allows everything. Nova's own ``keystonecontext`` filter then builds the request context from
these headers, as it would behind keystone.

Cyborg's API (``devservices.cyborg``) uses the same filter with ``default_project`` set to a UUID (Cyborg's
ARQ ``project_id`` is a UUID field: the project ``admin`` is refused with "Expected a uuid") and ``service_roles = service``: Cyborg 17 binds
(PATCH) ARQs only for a request with a service token whose roles include ``service`` ("This operation requires a
service token", 403), which Nova sends with ``[service_user] send_service_user_token``. It is mounted under
``/accelerator``: a request for the mount point itself arrives with an empty ``PATH_INFO``, which Cyborg 17's root
controller cannot route (IndexError in ``RootController._route``), so an empty path becomes ``/`` (what a web
server's mount does).
"""

from __future__ import annotations

from typing import Any


class NoAuthShim:
    def __init__(
        self, app: Any, default_project: str = "admin", roles: str = "admin,member,reader", service_roles: str = ""
    ) -> None:
        self.app = app
        self.default_project = default_project
        self.roles = roles
        self.service_roles = service_roles

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if not environ.get("PATH_INFO"):
            environ["PATH_INFO"] = "/"
        token = environ.get("HTTP_X_AUTH_TOKEN", "")
        user, sep, project = token.partition(":")
        if not sep or not user or not project:
            user, project = "admin", self.default_project
        environ.update(
            HTTP_X_IDENTITY_STATUS="Confirmed",
            HTTP_X_USER_ID=user,
            HTTP_X_USER_NAME=user,
            HTTP_X_PROJECT_ID=project,
            HTTP_X_TENANT_ID=project,
            HTTP_X_PROJECT_NAME=project,
            HTTP_X_ROLES=self.roles,
            HTTP_X_USER_DOMAIN_ID="default",
            HTTP_X_PROJECT_DOMAIN_ID="default",
        )
        if self.service_roles and environ.get("HTTP_X_SERVICE_TOKEN"):
            # What authtoken sets for a valid service token (Nova's [service_user] send_service_user_token).
            environ["HTTP_X_SERVICE_ROLES"] = self.service_roles
        return self.app(environ, start_response)


def filter_factory(global_conf: dict[str, Any], **local_conf: Any) -> Any:
    """Paste options: ``default_project``, the admin's project (Cyborg wants a UUID there: its ARQs store it), and
    ``roles``, and ``service_roles`` given to a request that carries a service token (``X-Service-Token``)."""
    default_project = str(local_conf.get("default_project") or "admin")
    roles = str(local_conf.get("roles") or "admin,member,reader")
    service_roles = str(local_conf.get("service_roles") or "")
    return lambda app: NoAuthShim(app, default_project, roles, service_roles)
