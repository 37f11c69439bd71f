"""Nova host aggregates into topology labels, against the session's real Nova 34 (``os-aggregates``): an aggregate
with an availability zone and ``gpufabric:network_node_layer`` metadata holding the compute host makes the
backend's sync label the host with its AZ, network node and aggregate; a lease's server boots into that zone;
taking the host out removes the labels again.

One test: it shares the session's Nova (``NOVA_GROUP``) and deletes its aggregate whatever happens (a host left in
an AZ aggregate would change where the other Nova tests boot).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.backends.openstack.topology import AGGREGATE_LABEL, LAYER_LABELS
from devservices import openstack
from tests.controller.backends.openstack.test_ironic_leases import lease, sync
from tests.controller.backends.openstack.test_nova_leases import VGPU_FLAVOR, nova_config
from tests.support.controller import Controller
from tests.support.openstack_cloud import NOVA_GROUP, az_aggregate, ensure_flavor, nova_admin_connection

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the labels are the sync's business, the store's behaviour on PostgreSQL the API tests'."""
    return f"sqlite:///{tmp_path / 'controller.db'}"


@NOVA_GROUP
def test_sync_labels_a_host_with_its_aggregate_az_and_network_node(
    nova: openstack.NovaDeployment, placement_url: str, controller: Controller
) -> None:
    conn = nova_admin_connection(nova, placement_url)
    ensure_flavor(conn, *VGPU_FLAVOR)
    with az_aggregate(conn, nova.host, layer=3) as (aggregate, servers):
        name = aggregate.name
        with controller.admin() as api, controller.client(controller.tenant_token) as tenant:
            created = api.post(
                "/v1/backends", json={"name": "cloud", "kind": "nova", "config": nova_config(nova, placement_url)}
            )
            assert created.status_code == 201, created.text
            assert sync(api, "cloud")["hosts"] == [nova.host]
            labels = api.get(f"/v1/hosts/{nova.host}").json()["labels"]
            assert labels["gpufabric.dev/az"] == f"az-{name}"
            assert labels[LAYER_LABELS[3]] == name
            assert labels[AGGREGATE_LABEL] == name

            # A lease there boots its server into the aggregate's zone (Nova refuses a pinned host of another one).
            held = lease(tenant, {"slices": [{"kind": "vgpu", "count": 1, "model": "A100"}], "azs": [f"az-{name}"]})
            assert held["state"] == "ready", held
            servers.append(held["result"]["server_id"])
            assert conn.compute.get_server(servers[0]).availability_zone == f"az-{name}"
            released = tenant.delete(f"/v1/leases/{held['id']}")
            assert released.status_code == 200 and released.json()["state"] == "released", released.text
            servers.clear()

            conn.compute.remove_host_from_aggregate(aggregate, nova.host)
            report = sync(api, "cloud")
            assert nova.host in report["changed"], report
            labels = api.get(f"/v1/hosts/{nova.host}").json()["labels"]
            assert not {"gpufabric.dev/az", LAYER_LABELS[3], AGGREGATE_LABEL} & set(labels), labels
