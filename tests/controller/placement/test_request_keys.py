"""The request language's ``ssh_public_keys``: OpenSSH keys only, not used for placement."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from controller.placement import parse_request

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILAl2JYWxubUY/nYYNm0p05IMUdc27Bwi1jeVAm6Uoax alice@laptop"


def test_keys_are_accepted_and_stripped() -> None:
    req = parse_request({"slices": [{"kind": "gpu"}], "ssh_public_keys": [f"  {KEY}\n"]})
    assert req.ssh_public_keys == [KEY]


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-key",
        "ssh-rsa",
        "-----BEGIN OPENSSH PRIVATE KEY----- abc",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIRequestKey alice@laptop",  # not base64
        "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAILAl2JYWxubUY/nYYNm0p05IMUdc27Bwi1jeVAm6Uoax",  # an ed25519 key called rsa
    ],
)
def test_anything_else_is_refused_naming_the_field(bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_request({"slices": [{"kind": "gpu"}], "ssh_public_keys": [KEY, bad]})
    assert "ssh_public_keys[1] is not an OpenSSH public key" in str(err.value)
