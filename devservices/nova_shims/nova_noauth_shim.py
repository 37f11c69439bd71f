"""A paste filter that stands in for keystonemiddleware's ``authtoken`` in tests (Nova 34 has no noauth mode).

Every request is authenticated: the token ``<user>:<project>`` names the user and project, any other token (the
SDK's ``auth_type=none`` sends ``notused``) is the admin user in the ``admin`` project. Roles are admin, member and
reader, so policy allows everything. Nova's own ``keystonecontext`` filter then builds the request context from
these headers, as it would behind keystone.
"""

from __future__ import annotations

from typing import Any


class NoAuthShim:
    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        token = environ.get("HTTP_X_AUTH_TOKEN", "")
        user, sep, project = token.partition(":")
        if not sep or not user or not project:
            user, project = "admin", "admin"
        environ.update(
            HTTP_X_IDENTITY_STATUS="Confirmed",
            HTTP_X_USER_ID=user,
            HTTP_X_USER_NAME=user,
            HTTP_X_PROJECT_ID=project,
            HTTP_X_TENANT_ID=project,
            HTTP_X_PROJECT_NAME=project,
            HTTP_X_ROLES="admin,member,reader",
            HTTP_X_USER_DOMAIN_ID="default",
            HTTP_X_PROJECT_DOMAIN_ID="default",
        )
        return self.app(environ, start_response)


def filter_factory(global_conf: dict[str, Any], **local_conf: Any) -> Any:
    return NoAuthShim
