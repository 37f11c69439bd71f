"""One error hierarchy for the EKS driver: every failure a caller may want to tell apart."""

from __future__ import annotations


class EksError(Exception):
    """Base of every error raised by ``drivers.eks``."""


class AwsCallFailed(EksError):
    """An AWS API call failed for a reason the driver does not map more precisely."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"{operation}: {code}: {message}")
        self.operation = operation
        self.code = code
        self.message = message


class ClusterNotFound(EksError):
    pass


class NodegroupNotFound(EksError):
    pass


class NodegroupExists(EksError):
    pass


class UnknownInstanceType(EksError, LookupError):
    pass


class EksctlConfigError(EksError, ValueError):
    """An eksctl ClusterConfig that cannot be imported; the message names the field (``managedNodeGroups[0].maxSize``)."""

    def __init__(self, field: str, message: str, source: str | None = None) -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field}: {message}" if field else f"{where}{message}")
        self.field = field
        self.source = source
        self.detail = message


class CapacityError(EksError):
    """A placement-group / capacity-reservation call was refused; ``code`` uses the EC2 error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class KubeError(EksError):
    """A Kubernetes API call failed; ``status`` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, message: str, status: int = 0, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
