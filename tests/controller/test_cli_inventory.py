"""`gpufabric hosts | pools | quotas | validations` list/show against a real controller: --json prints exactly the
API's documents, the tables print data as it is (a PCI bus id with ":AB:", a label with brackets), and the older
spellings (`host reset-credential`, `validate list`) still work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivers.contract.inventory import PciInfo
from drivers.contract.protocol import RegisterRequest
from tests.support.cli_helpers import Cli, assert_one_line_error, isolated_cli, sqlite_url
from tests.support.controller import Controller
from tests.support.helpers import report, synthetic_inventory

LABEL = "[bold]rack-7[/bold] :AB:"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, controller: Controller) -> Cli:
    """The CLI logged in as an admin, with one host whose GPU sits at PCI bus 0xAB and one plain host."""
    cli = isolated_cli(monkeypatch, tmp_path)
    assert cli("login", "--controller", controller.url, "--token", controller.admin_token).exit_code == 0
    with controller.client(controller.bootstrap_token) as boot:
        for name, labels in (("gpu-ab", {"rack": LABEL}), ("gpu-plain", {})):
            body = RegisterRequest(hostname=name, agent_version="test", labels=labels).model_dump(mode="json")
            registered = boot.post("/v1/agents/register", json=body)
            assert registered.status_code == 201, registered.text
            inventory = synthetic_inventory(name, gpus=1)
            if name == "gpu-ab":
                inventory.gpus[0].pci = PciInfo(bus_id="00000000:AB:00.0", device_id="0x233010DE")
            assert report(boot, registered.json()["credential"], inventory, 1).status_code == 200
    return cli


def api_json(controller: Controller, path: str) -> object:
    with controller.admin() as api:
        response = api.get(path)
        assert response.status_code == 200, response.text
        return response.json()


def test_hosts_list_and_show(admin: Cli, controller: Controller) -> None:
    listed = admin("hosts", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == api_json(controller, "/v1/hosts")
    table = admin("hosts", "list")
    assert "gpu-ab" in table.stdout and "gpu-plain" in table.stdout and "NVIDIA H100 80GB HBM3" in table.stdout
    only = admin("hosts", "list", "--model", "H100", "--state", "ready", "--limit", "1", "--json")
    assert [h["hostname"] for h in json.loads(only.stdout)] == ["gpu-ab"]

    shown = admin("hosts", "show", "gpu-ab", "--json")
    assert json.loads(shown.stdout) == api_json(controller, "/v1/hosts/gpu-ab")
    human = admin("hosts", "show", "gpu-ab")
    assert human.exit_code == 0, human.output
    assert "00000000:AB:00.0" in human.stdout  # not an emoji code
    assert LABEL in human.stdout  # not markup
    assert "GPU-gpu-ab-0" in human.stdout
    assert_one_line_error(admin("hosts", "show", "nope"), 2, "HTTP 404", "host nope")


def test_reset_credential_under_both_names(admin: Cli, controller: Controller) -> None:
    plural = admin("hosts", "reset-credential", "gpu-ab", "--reason", "re-imaged")
    assert plural.exit_code == 0, plural.output
    assert plural.stdout.startswith("host gpu-ab: 1 credential(s) revoked; next registration: ")
    singular = admin("host", "reset-credential", "gpu-ab", "--json")
    assert singular.exit_code == 0 and json.loads(singular.stdout)["revoked"] == 0


def test_pools_list_and_show(admin: Cli, controller: Controller) -> None:
    policy = {"on_demand_mig": True}
    with controller.admin() as api:
        assert api.post("/v1/pools", json={"name": "train", "description": "[x] team", "policy": policy}).is_success
        assert api.put("/v1/hosts/gpu-ab/pool", json={"pool": "train"}).status_code == 200
    listed = admin("pools", "list", "--json")
    assert json.loads(listed.stdout) == api_json(controller, "/v1/pools")
    table = admin("pools", "list")
    assert "train" in table.stdout and "[x] team" in table.stdout
    shown = admin("pools", "show", "train", "--json")
    assert json.loads(shown.stdout)["hosts"] == 1
    human = admin("pools", "show", "train")
    assert human.exit_code == 0 and '"on_demand_mig": true' in human.stdout
    assert "train" in admin("hosts", "list", "--pool", "train").stdout
    assert_one_line_error(admin("pools", "show", "nope"), 2, "HTTP 404", "pool nope")


def test_quotas_list_and_show(admin: Cli, controller: Controller) -> None:
    with controller.admin() as api:
        limits = {"limits": [{"kind": "gpu", "model": "H100-80GB", "limit": 4}, {"kind": "mig", "limit": 20}]}
        assert api.put("/v1/quotas/acme", json=limits).status_code == 200
        lease = api.post("/v1/leases", params={"tenant": "acme"}, json={"slices": [{"kind": "gpu"}]})
        assert lease.status_code == 201, lease.text
    listed = admin("quotas", "list", "--json")
    assert json.loads(listed.stdout) == api_json(controller, "/v1/quotas")
    table = admin("quotas", "list").stdout
    assert "acme" in table and "H100-80GB" in table
    shown = admin("quotas", "show", "acme", "--json")
    assert json.loads(shown.stdout)["usage"] == {"gpu:H100-80GB": 1}
    human = admin("quotas", "show", "acme").stdout
    assert "limits of acme" in human and "gpu:H100-80GB" in human
    tenant = admin("quotas", "list", "--token", controller.tenant_token)
    assert_one_line_error(tenant, 2, "HTTP 403")


def test_validations_list_and_show(admin: Cli, controller: Controller) -> None:
    with controller.admin() as api:
        started = api.post("/v1/validations", json={"hosts": ["gpu-ab"]})
        assert started.status_code == 201, started.text
    validation_id = started.json()["id"]
    listed = admin("validations", "list", "--json")
    assert [v["id"] for v in json.loads(listed.stdout)] == [validation_id]
    assert json.loads(admin("validations", "list", "--host", "gpu-plain", "--json").stdout) == []
    assert validation_id in admin("validations", "list", "--host", "gpu-ab").stdout
    assert validation_id in admin("validate", "list").stdout  # the older name
    shown = admin("validations", "show", validation_id, "--json")
    assert json.loads(shown.stdout)["hosts"] == ["gpu-ab"]
    human = admin("validations", "show", validation_id)
    assert human.exit_code == 0 and validation_id in human.stdout
    assert_one_line_error(admin("validations", "show", "nope"), 2, "HTTP 404")
