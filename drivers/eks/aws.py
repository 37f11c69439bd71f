"""boto3 clients built from explicit settings, and the mapping of botocore errors onto ``drivers.eks.errors``."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field

from drivers.eks.errors import AwsCallFailed, EksError

T = TypeVar("T")

# Standard retry mode backs off on throttling; EKS/EC2 describe calls are rate limited per account.
_BOTO_CONFIG = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=30)


class AwsTarget(BaseModel):
    """Where the AWS calls go. ``endpoint_url`` points both EKS and EC2 at one endpoint (moto in tests)."""

    model_config = ConfigDict(frozen=True)

    region: str = Field(min_length=1)
    endpoint_url: str | None = None
    profile: str | None = Field(default=None, description="Named profile from the AWS shared config")

    def session(self) -> boto3.session.Session:
        return boto3.session.Session(profile_name=self.profile, region_name=self.region)

    def client(self, service: str) -> Any:
        """A client shared per (target, service): making one loads service models (~0.3 s); clients are thread-safe."""
        return _cached_client(self, service)


@lru_cache(maxsize=64)
def _cached_client(target: AwsTarget, service: str) -> Any:
    return target.session().client(service, endpoint_url=target.endpoint_url, config=_BOTO_CONFIG)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", str(exc)))


def call(operation: str, fn: Callable[[], T], mapping: dict[str, Callable[[str], EksError]] | None = None) -> T:
    """Run one AWS call; known error codes become the given driver errors, others :class:`AwsCallFailed`."""
    try:
        return fn()
    except ClientError as exc:
        code = error_code(exc)
        message = error_message(exc)
        if mapping and code in mapping:
            raise mapping[code](message) from None
        raise AwsCallFailed(operation, code, message) from None
    except BotoCoreError as exc:
        raise AwsCallFailed(operation, type(exc).__name__, str(exc)) from None
