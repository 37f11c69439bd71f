from __future__ import annotations

import pytest
from pydantic import ValidationError

from controller.placement import parse_request


def _err(body: dict) -> str:
    with pytest.raises(ValidationError) as e:
        parse_request(body)
    return str(e.value)


def test_minimal_request_defaults() -> None:
    r = parse_request({"slices": [{"kind": "gpu"}]})
    assert r.nodes == 1 and r.topology == "any" and r.slices[0].count == 1
    assert r.describe() == "1 x gpu"


def test_full_request_parses_and_describes() -> None:
    r = parse_request(
        {
            "slices": [{"kind": "mig", "count": 2, "model": "A100-40GB", "profile": "MIG 3g.20gb"}],
            "nodes": 2,
            "topology": "same-placement-group",
            "backends": ["eks", "static"],
            "regions": ["eu-west-1"],
            "duration": "PT2H",
            "require_validated": True,
        }
    )
    assert r.slices[0].profile == "3g.20gb"
    assert r.duration is not None and r.duration.total_seconds() == 7200
    assert r.describe() == "2 nodes x (2 x mig:3g.20gb A100-40GB), same-placement-group"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"slices": [{"kind": "gpu", "profile": "3g.40gb"}]}, "only valid with kind 'mig'"),
        ({"slices": [{"kind": "mig", "vgpu_type": "A16-4Q", "profile": "1g.5gb"}]}, "only valid with kind 'vgpu'"),
        ({"slices": [{"kind": "gpu", "count": 0}]}, "greater than or equal to 1"),
        ({"slices": [{"kind": "mig"}]}, "needs a profile"),
        ({"slices": [{"kind": "tpu"}]}, "kind"),
        ({"slices": []}, "at least 1"),
        ({"slices": [{"kind": "gpu"}], "nodes": 2, "topology": "same-host"}, "same-host' means one node"),
        ({"slices": [{"kind": "gpu"}], "topology": "same-rack"}, "topology"),
        ({"slices": [{"kind": "gpu"}], "duration": -5}, "duration must be positive"),
        ({"slices": [{"kind": "gpu", "min_memory_gib": 0}]}, "greater than 0"),
        ({"slices": [{"kind": "gpu"}], "colour": "blue"}, "Extra inputs are not permitted"),
    ],
)
def test_validation_errors_are_clear(body: dict, message: str) -> None:
    assert message in _err(body)
