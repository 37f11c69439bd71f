"""Every desired-state write (host override, pool create, pool policy) is validated with the models the agent
parses it with and, where the GPUs are known, against their catalog geometry: a bad document is a 422
problem+json naming the field, and nothing is stored."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from sqlalchemy import select

from controller.store.models import DesiredOverride, Pool
from tests.support.controller import Controller
from tests.support.helpers import assert_problem, register, report, synthetic_inventory

H100 = "NVIDIA H100 80GB HBM3"
L4 = "NVIDIA L4"


def mig(mig_devices: dict[str, Any], *, extra_entry: dict[str, Any] | None = None, **entry: Any) -> dict[str, Any]:
    spec = {"devices": "all", "mig-enabled": True, "mig-devices": mig_devices, **entry}
    configs: dict[str, Any] = {"target": [spec]}
    if extra_entry is not None:
        configs["target"].append(extra_entry)
    return {"config": {"version": "v1", "mig-configs": configs}, "selected": "target"}


def sharing(*resources: dict[str, Any], mode: str = "timeSlicing", **flags: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"version": "v1", "sharing": {mode: {"resources": list(resources)}}}
    if flags:
        config["flags"] = flags
    return {"config": config}


GPU = "nvidia.com/gpu"
MIG_PATH = ["config", "mig-configs", "target", 0, "mig-devices"]

# (case, body of PUT /v1/hosts/h100-a/desired, expected errors[0].loc after ["body"], words in the detail)
BAD_HOST_DESIRED: list[tuple[str, dict[str, Any], list[Any], str]] = [
    ("unknown profile 1g.5gbb", {"mig": mig({"1g.5gbb": 1})}, ["mig", *MIG_PATH, "1g.5gbb"], "not a MIG profile"),
    ("count 10^21", {"mig": mig({"1g.10gb": 10**21})}, ["mig", *MIG_PATH, "1g.10gb"], "<= 7"),
    ("count true", {"mig": mig({"1g.10gb": True})}, ["mig", *MIG_PATH, "1g.10gb"], "whole number"),
    ("count 2.0", {"mig": mig({"1g.10gb": 2.0})}, ["mig", *MIG_PATH, "1g.10gb"], "whole number"),
    ("count -1", {"mig": mig({"1g.10gb": -1})}, ["mig", *MIG_PATH, "1g.10gb"], ">= 0"),
    ("count 8", {"mig": mig({"1g.10gb": 8})}, ["mig", *MIG_PATH, "1g.10gb"], "<= 7"),
    ("8 instances in all", {"mig": mig({"1g.10gb": 4, "2g.20gb": 4})}, ["mig", *MIG_PATH], "no GPU holds more"),
    ("profile of another GPU", {"mig": mig({"1g.5gb": 1})}, ["mig", *MIG_PATH, "1g.5gb"], "does not exist on"),
    ("more than the GPU holds", {"mig": mig({"3g.40gb": 3})}, ["mig", *MIG_PATH, "3g.40gb"], "at most 2 fit"),
    ("do not fit together", {"mig": mig({"1g.20gb": 4, "1g.10gb": 1})}, ["mig", *MIG_PATH], "do not fit"),
    ("too many compute slices", {"mig": mig({"4g.40gb": 1, "3g.40gb": 2})}, ["mig", *MIG_PATH], "do not fit"),
    ("GPU index 10^21", {"mig": mig({}, devices=[10**21])}, ["mig", "config", "mig-configs", "target", 0, "devices"], "GPU indexes"),
    ("GPU index listed twice", {"mig": mig({}, devices=[0, 0])}, ["mig", "config", "mig-configs", "target", 0, "devices"], "twice"),
    ("unknown entry key", {"mig": mig({}, migDevices={})}, ["mig", "config", "mig-configs", "target", 0, "migDevices"], "unknown key"),
    ("mig-enabled 'yes'", {"mig": mig({}, **{"mig-enabled": "yes"})}, ["mig", "config", "mig-configs", "target", 0, "mig-enabled"], "mig-enabled"),
    ("profiles with MIG off", {"mig": mig({"1g.10gb": 1}, **{"mig-enabled": False})}, ["mig", *MIG_PATH], "mig-enabled is false"),
    ("selected missing", {"mig": {**mig({}), "selected": "nope"}}, ["mig", "selected"], "no config named 'nope'"),
    ("version v2", {"mig": {"config": {"version": "v2", "mig-configs": {}}, "selected": "x"}}, ["mig", "config", "version"], "version"),
    ("unknown top-level key", {"mig": {"config": {**mig({})["config"], "extra": 1}, "selected": "target"}}, ["mig", "config", "extra"], "unknown top-level"),
    ("no configs", {"mig": {"config": {"version": "v1", "mig-configs": {}}, "selected": "x"}}, ["mig", "config", "mig-configs"], "non-empty"),
    ("entries not a list", {"mig": {"config": {"version": "v1", "mig-configs": {"target": {}}}, "selected": "target"}}, ["mig", "config", "mig-configs", "target"], "non-empty list"),
    ("bad device filter", {"mig": mig({}, **{"device-filter": "H100"})}, ["mig", "config", "mig-configs", "target", 0, "device-filter"], "PCI device id"),
    ("unknown sharing mode", {"sharing": {"config": {"version": "v1", "sharing": {"vgpu": {"resources": []}}}}}, ["sharing", "config", "sharing", "vgpu"], "unknown key"),
    ("replicas 1", {"sharing": sharing({"name": GPU, "replicas": 1})}, ["sharing", "config", "sharing", "timeSlicing", "resources", 0, "replicas"], ">= 2"),
    ("replicas 10^21", {"sharing": sharing({"name": GPU, "replicas": 10**21})}, ["sharing", "config", "sharing", "timeSlicing", "resources", 0, "replicas"], "at most 1024"),
    ("replicas 1025", {"sharing": sharing({"name": GPU, "replicas": 1025})}, ["sharing", "config", "sharing", "timeSlicing", "resources", 0, "replicas"], "at most 1024"),
    ("replicas true", {"sharing": sharing({"name": GPU, "replicas": True})}, ["sharing", "config", "sharing", "timeSlicing", "resources", 0, "replicas"], "integer"),
    ("replicas '4'", {"sharing": sharing({"name": GPU, "replicas": "4"})}, ["sharing", "config", "sharing", "timeSlicing", "resources", 0, "replicas"], "integer"),
    ("device count 10^21", {"sharing": sharing({"name": GPU, "replicas": 2, "devices": 10**21})}, ["sharing", "config", "sharing", "timeSlicing", "resources", 0, "devices"], "device count"),
    ("unknown resource", {"sharing": sharing({"name": "nvidia.com/tpu", "replicas": 2})}, ["sharing", "config", "sharing", "timeSlicing", "resources", 0, "name"], "unknown resource"),
    ("no resources", {"sharing": sharing()}, ["sharing", "config", "sharing", "timeSlicing", "resources"], "no resources"),
    ("MPS on a MIG resource", {"sharing": sharing({"name": "nvidia.com/mig-1g.10gb", "replicas": 2}, mode="mps")}, ["sharing", "config", "sharing", "mps", "resources", 0, "name"], "only supported"),
    ("time-slicing and MPS", {"sharing": {"config": {"version": "v1", "sharing": {"timeSlicing": {"resources": [{"name": GPU, "replicas": 2}]}, "mps": {"resources": [{"name": GPU, "replicas": 2}]}}}}}, ["sharing", "config", "sharing"], "mutually exclusive"),
    ("sharing version v2", {"sharing": {"config": {"version": "v2"}}}, ["sharing", "config", "version"], "version"),
    ("unknown flag", {"sharing": sharing({"name": GPU, "replicas": 2}, migStrategy="half")}, ["sharing", "config", "flags", "migStrategy"], "migStrategy"),
]  # fmt: skip


def _fleet(controller: Controller) -> None:
    with controller.client() as client:
        for name, model in [("h100-a", H100), ("h100-b", H100), ("l4-a", L4)]:
            credential = register(client, controller.bootstrap_token, name)
            assert report(client, credential, synthetic_inventory(name, 2, model), 1).status_code == 200


def _stored(controller: Controller) -> tuple[list[tuple[int, Any, Any]], list[tuple[str, Any]]]:
    """Every desired-state row: host overrides and pool policies."""
    with controller.db.session() as session:
        overrides = [(o.host_id, o.mig, o.sharing) for o in session.scalars(select(DesiredOverride))]
        pools = [(p.name, p.policy) for p in session.scalars(select(Pool).order_by(Pool.name))]
    return sorted(overrides, key=lambda o: o[0]), pools


GOOD_MIG = mig({"1g.10gb": 7})
GOOD_SHARING = sharing({"name": GPU, "replicas": 4})


def test_bad_host_desired_states_are_refused_and_nothing_is_stored(controller: Controller) -> None:
    _fleet(controller)
    with controller.admin() as api:
        # A stored override first, so "unchanged" is not merely "still empty".
        assert api.put("/v1/hosts/h100-a/desired", json={"mig": GOOD_MIG}).status_code == 200
        before = _stored(controller)
        revision = api.get("/v1/hosts/h100-a").json()["desired"]["revision"]
        for case, body, loc, words in BAD_HOST_DESIRED:
            problem = assert_problem(api.put("/v1/hosts/h100-a/desired", json=body), 422, "validation-error")
            assert problem["errors"][0]["loc"] == ["body", *loc], (case, problem)
            assert words in problem["detail"], (case, problem["detail"])
            assert _stored(controller) == before, case
        assert api.get("/v1/hosts/h100-a").json()["desired"]["revision"] == revision
    assert len(BAD_HOST_DESIRED) >= 30


def test_the_reproduction_from_the_issue(controller: Controller) -> None:
    """An unknown profile `1g.5gbb` and a count of 10^21 were stored and then broke the agent."""
    _fleet(controller)
    with controller.admin() as api:
        for body in ({"mig": mig({"1g.5gbb": 1})}, {"mig": mig({"1g.10gb": 10**21})}):
            assert_problem(api.put("/v1/hosts/h100-a/desired", json=body), 422, "validation-error")
            pool = {"name": "p", "policy": body}
            assert_problem(api.post("/v1/pools", json=pool), 422, "validation-error")
    assert _stored(controller) == ([], [])


def test_layout_is_checked_against_the_hosts_gpu_model(controller: Controller) -> None:
    _fleet(controller)
    with controller.admin() as api:
        # MIG on a GPU that has none.
        problem = assert_problem(api.put("/v1/hosts/l4-a/desired", json={"mig": GOOD_MIG}), 422, "validation-error")
        assert "host l4-a GPU 0 (NVIDIA L4): GPU is not MIG capable" in problem["detail"]
        # The same document restricted to H100s by device-filter selects nothing on the L4: accepted (the agent
        # leaves unselected GPUs alone), and so is a document whose other configs are for other GPU models.
        filtered = mig({"1g.10gb": 7}, **{"device-filter": "0x233010DE"})
        filtered["config"]["mig-configs"]["a100-40gb"] = [
            {"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 7}}
        ]
        assert api.put("/v1/hosts/l4-a/desired", json={"mig": filtered}).status_code == 200
        # Per GPU index: GPU 1 gets a layout that does not exist on an H100.
        split = mig(
            {"7g.80gb": 1},
            devices=[0],
            extra_entry={"devices": [1], "mig-enabled": True, "mig-devices": {"7g.40gb": 1}},
        )
        problem = assert_problem(api.put("/v1/hosts/h100-a/desired", json={"mig": split}), 422, "validation-error")
        assert problem["errors"][0]["loc"] == ["body", "mig", *MIG_PATH[:3], 1, "mig-devices", "7g.40gb"]
        assert "host h100-a GPU 1" in problem["detail"]
        split["config"]["mig-configs"]["target"][1]["mig-devices"] = {"3g.40gb": 2}
        assert api.put("/v1/hosts/h100-a/desired", json={"mig": split}).status_code == 200


def test_good_desired_state_is_still_accepted_and_reaches_the_host(controller: Controller) -> None:
    _fleet(controller)
    with controller.admin() as api:
        body = {"mig": mig({"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}), "sharing": GOOD_SHARING}
        response = api.put("/v1/hosts/h100-a/desired", json=body)
        assert response.status_code == 200, response.text
        desired = response.json()["desired"]
        assert desired["mig"] == body["mig"] and desired["sharing"] == body["sharing"]
        for replicas in (2, 1024):
            one = {"sharing": sharing({"name": GPU, "replicas": replicas, "devices": ["0", "GPU-h100-a-1"]})}
            assert api.put("/v1/hosts/h100-a/desired", json=one).status_code == 200
        mps = {"sharing": sharing({"name": GPU, "replicas": 3}, mode="mps")}
        assert api.put("/v1/hosts/h100-a/desired", json=mps).status_code == 200
        # A device-plugin config without a sharing section is valid: no sharing on this host.
        assert api.put("/v1/hosts/h100-a/desired", json={"sharing": {"config": {"version": "v1"}}}).status_code == 200
        assert api.put("/v1/hosts/h100-a/desired", json={"mig": None, "sharing": None}).status_code == 200


POOL_CASES = ("unknown profile 1g.5gbb", "count 10^21", "replicas 10^21", "unknown sharing mode", "selected missing")


@pytest.mark.parametrize("case", [c for c in BAD_HOST_DESIRED if c[0] in POOL_CASES], ids=lambda c: str(c[0]))
def test_bad_pool_policies_are_refused_and_nothing_is_stored(
    controller: Controller, case: tuple[str, dict[str, Any], list[Any], str]
) -> None:
    _, body, loc, words = case
    with controller.admin() as api:
        problem = assert_problem(api.post("/v1/pools", json={"name": "p", "policy": body}), 422, "validation-error")
        assert problem["errors"][0]["loc"] == ["body", "policy", *loc], problem
        assert words in problem["detail"]
        assert api.get("/v1/pools").json() == []
        good = {"mig": GOOD_MIG, "sharing": GOOD_SHARING, "on_demand_mig": True}
        assert api.post("/v1/pools", json={"name": "p", "policy": good}).status_code == 201
        before = _stored(controller)
        problem = assert_problem(api.put("/v1/pools/p/policy", json=body), 422, "validation-error")
        assert problem["errors"][0]["loc"] == ["body", *loc], problem
        assert _stored(controller) == before
        assert api.get("/v1/pools/p").json()["policy"] == good


def test_pool_policy_must_fit_the_hosts_that_follow_it(controller: Controller) -> None:
    _fleet(controller)
    with controller.admin() as api:
        assert api.post("/v1/pools", json={"name": "gpu"}).status_code == 201
        for host in ("h100-a", "l4-a"):
            assert api.put(f"/v1/hosts/{host}/pool", json={"pool": "gpu"}).status_code == 200
        before = _stored(controller)
        problem = assert_problem(api.put("/v1/pools/gpu/policy", json={"mig": GOOD_MIG}), 422, "validation-error")
        assert "host l4-a GPU 0 (NVIDIA L4): GPU is not MIG capable" in problem["detail"]
        assert _stored(controller) == before
        # l4-a keeps its own MIG layout (an override that selects nothing on it): the pool's no longer applies.
        h100_only = copy.deepcopy(GOOD_MIG)
        h100_only["config"]["mig-configs"]["target"][0]["device-filter"] = "0x233010DE"
        assert api.put("/v1/hosts/l4-a/desired", json={"mig": h100_only}).status_code == 200
        response = api.put("/v1/pools/gpu/policy", json={"mig": GOOD_MIG})
        assert response.status_code == 200, response.text
        # A pool without hosts cannot be checked against GPUs: only the document's own rules apply.
        assert api.post("/v1/pools", json={"name": "empty", "policy": {"mig": mig({"1g.5gb": 7})}}).status_code == 201
