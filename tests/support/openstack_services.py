"""Fixtures that start real OpenStack services (Placement, Ironic) from their own virtualenv.

The first run builds the services virtualenv (about 2-3 minutes; later runs reuse it). Under pytest-xdist every
worker that runs an integration test starts its own services; the virtualenv build is serialised with a file lock.

Without a network the virtualenv cannot be built: the tests are skipped, unless ``GPUFABRIC_REQUIRE_OPENSTACK=1``
(CI), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devservices import openstack

REQUIRE_ENV = "GPUFABRIC_REQUIRE_OPENSTACK"


def _required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def openstack_venv() -> Path:
    """The services virtualenv, built on first use."""
    try:
        return openstack.create_venv()
    except openstack.VenvBuildError as e:
        error = e
    # Outside the except block: the report shows pip's output once, not chained twice.
    if error.offline and not _required():
        pytest.skip(
            f"OpenStack services virtualenv unavailable (no network?); set {REQUIRE_ENV}=1 to make this a "
            f"failure. {str(error).splitlines()[0]}"
        )
    pytest.fail(f"{error}\n({REQUIRE_ENV}={os.environ.get(REQUIRE_ENV, '')!r})", pytrace=False)


def _start(name: str, start: Callable[[Path, Path], openstack.Service], base: Path, venv: Path) -> openstack.Service:
    try:
        return start(base, venv)
    except openstack.ServiceError as e:
        error = e
    pytest.fail(f"OpenStack {name} did not start: {error}", pytrace=False)


@pytest.fixture(scope="session")
def placement_service(openstack_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openstack.Service]:
    """A real Placement for this session (one per xdist worker); ``.log_tail()`` for failure messages."""
    base = tmp_path_factory.mktemp("placement")
    with openstack.running(_start("Placement", openstack.start_placement, base, openstack_venv)) as service:
        yield service


@pytest.fixture(scope="session")
def ironic_service(openstack_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openstack.Service]:
    """A real standalone Ironic for this session (one per xdist worker)."""
    base = tmp_path_factory.mktemp("ironic")
    with openstack.running(_start("Ironic", openstack.start_ironic, base, openstack_venv)) as service:
        yield service


@pytest.fixture(scope="session")
def placement_url(placement_service: openstack.Service) -> str:
    """Base URL of a real Placement (noauth2: send ``X-Auth-Token: admin``; see ``openstack.PLACEMENT_HEADERS``)."""
    return placement_service.url


@pytest.fixture(scope="session")
def ironic_url(ironic_service: openstack.Service) -> str:
    """Base URL of a real standalone Ironic (noauth, fake-hardware)."""
    return ironic_service.url


@pytest.fixture(scope="session")
def keystone_service(openstack_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openstack.Service]:
    """A real Keystone (fernet tokens, sqlite) for this session (one per xdist worker), bootstrapped with an admin."""
    from devservices import keystone

    base = tmp_path_factory.mktemp("keystone")
    with openstack.running(_start("Keystone", keystone.start_keystone, base, openstack_venv)) as service:
        yield service
