"""The SSH host keys gpufabric makes for Ironic nodes and Nova servers: cloud-init gets the pair, the fingerprint is
the one OpenSSH prints, and nothing else is generated on the machine."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from drivers.openstack import AgentBootstrap, fingerprint, key_blob, new_host_key
from drivers.openstack.configdrive import ironic_config_drive, user_data


def test_the_fingerprint_is_the_one_ssh_keygen_prints() -> None:
    key = new_host_key()
    assert key.public.startswith("ssh-ed25519 ") and "PRIVATE" not in key.public
    assert key.private_openssh.get_secret_value().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert "BEGIN" not in repr(key)  # the private half is a SecretStr
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed")
    out = subprocess.run(["ssh-keygen", "-lf", "-"], input=key.public, capture_output=True, text=True, check=True)
    assert out.stdout.split()[1] == key.fingerprint == fingerprint(key.public)


@pytest.mark.parametrize(
    "bad",
    [
        "ssh-ed25519",
        "ssh-ed25519 not*base64",
        "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAILAl2JYWxubUY/nYYNm0p05IMUdc27Bwi1jeVAm6Uoax",
    ],
)
def test_a_line_that_is_not_a_key_of_its_type_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        key_blob(bad)


def test_cloud_init_gets_the_pair_and_makes_no_other_host_key() -> None:
    key = new_host_key()
    boot = AgentBootstrap(
        controller_url="https://gpufabric.test",
        bootstrap_token="bt",
        ssh_public_keys=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILAl2JYWxubUY/nYYNm0p05IMUdc27Bwi1jeVAm6Uoax a@b"],
        ssh_host_key=key,
    )
    for text in (user_data(boot, "nova"), ironic_config_drive("l1", "n1", "gpu-1", boot)["user_data"]):
        doc = yaml.safe_load(text)
        assert doc["ssh_keys"] == {
            "ed25519_private": key.private_openssh.get_secret_value(),
            "ed25519_public": key.public,
        }
        assert doc["ssh_genkeytypes"] == [] and doc["ssh_authorized_keys"] == boot.ssh_public_keys
    plain = yaml.safe_load(user_data(boot.model_copy(update={"ssh_host_key": None}), "nova"))
    assert "ssh_keys" not in plain and "ssh_genkeytypes" not in plain
