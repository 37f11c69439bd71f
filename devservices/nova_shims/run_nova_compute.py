"""Start nova-compute with the test GPU driver: nova loads drivers only as ``nova.virt.<name>``, so the module is
registered under that name before nova's own entry point runs (``compute_driver = fake_gpu.FakeGPUDriver``)."""
# ruff: noqa: I001 - nova.cmd.compute must be imported first: it sets up the threading backend and refuses to run
# if eventlet (imported by nova.virt.fake) was imported before it.

from __future__ import annotations

import sys

import nova.cmd.compute
import nova.virt

import fake_gpu_driver

sys.modules["nova.virt.fake_gpu"] = fake_gpu_driver
nova.virt.fake_gpu = fake_gpu_driver  # type: ignore[attr-defined]

if __name__ == "__main__":
    sys.exit(nova.cmd.compute.main())
