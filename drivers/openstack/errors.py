"""One error hierarchy for the OpenStack driver: every failure a caller may want to tell apart."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class OpenStackError(Exception):
    """Base of every error raised by ``drivers.openstack``."""


class OpenStackConfigError(OpenStackError, ValueError):
    """The backend configuration cannot be used; ``field`` names the offending setting (``auth.cloud``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


class OpenStackCallFailed(OpenStackError):
    """An API call failed for a reason the driver does not map more precisely."""

    def __init__(self, operation: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{operation}: {message}" + (f" (HTTP {status})" if status else ""))
        self.operation = operation
        self.status = status
        self.message = message


class ResourceNotFound(OpenStackError, LookupError):
    """A node, server, flavor or resource provider does not exist (any more)."""


class ProvisioningFailed(OpenStackError):
    """A node or server could not be brought to a usable state.

    ``resource`` is the Ironic node / Nova server id, ``reason`` what went wrong (also the maintenance reason set on
    a failed Ironic node), ``state`` the last provision/server state seen.
    """

    def __init__(self, resource: str, reason: str, state: str | None = None) -> None:
        super().__init__(f"{resource}: {reason}")
        self.resource = resource
        self.reason = reason
        self.state = state


class ProvisioningTimeout(ProvisioningFailed):
    """The wait for the target state ran out of time."""


class NoValidHost(ProvisioningFailed):
    """Nova's scheduler found no host for the flavor: the caller should try the next candidate."""


class NoMatchingFlavor(OpenStackError, LookupError):
    """No discovered flavor provides the requested slice."""


def sdk_call(operation: str, fn: Callable[[], T]) -> T:
    """Run one openstacksdk call, its failures mapped onto this hierarchy (``operation`` names it in messages)."""
    import keystoneauth1.exceptions as ksexc
    import openstack.exceptions as osexc

    try:
        return fn()
    except osexc.NotFoundException as e:
        raise ResourceNotFound(f"{operation}: {e}") from e
    except osexc.HttpException as e:
        raise OpenStackCallFailed(operation, str(e.details or e), e.status_code) from e
    except osexc.SDKException as e:
        raise OpenStackCallFailed(operation, str(e)) from e
    except ksexc.ClientException as e:  # keystoneauth: Keystone or the endpoint unreachable, auth refused
        raise OpenStackCallFailed(operation, f"{type(e).__name__}: {e}") from e
