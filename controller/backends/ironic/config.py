"""The stored config of an ``ironic`` backend (``IronicBackend.config_model``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controller.backends.openstack.config import OpenStackBackendConfig
from drivers.openstack import PollPolicy


class IronicConfig(OpenStackBackendConfig):
    """Ironic bare-metal GPU nodes, leased whole (every GPU of the node goes to one lease)."""

    image_source: str = Field(min_length=1, description="Glance image UUID or an http(s) URL of the image")
    image_checksum: str | None = Field(default=None, description="Checksum of an http(s) image (md5/sha256)")
    root_gb: int = Field(default=10, gt=0)
    resource_class_prefix: str = Field(
        default="baremetal-gpu", min_length=1, description="Nodes whose resource class starts with it are GPU nodes"
    )
    cleaning: Literal["expected", "skipped"] = Field(
        default="expected",
        description="'expected': Ironic runs automated cleaning on undeploy (the release waits through it); "
        "'skipped': the deployment has automated_clean disabled",
    )
    deploy_timeout_s: float = Field(default=3600.0, gt=0, description="Deadline of one deploy")
    release_timeout_s: float = Field(default=3600.0, gt=0, description="Deadline of an undeploy (with cleaning)")

    @property
    def deploy_poll(self) -> PollPolicy:
        return PollPolicy(interval_s=self.poll_interval_s, timeout_s=self.deploy_timeout_s)

    @property
    def release_poll(self) -> PollPolicy:
        return PollPolicy(interval_s=self.poll_interval_s, timeout_s=self.release_timeout_s)
