"""The key that seals what leases hand out: made once in the data directory (0600), or given (several: rotation)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from controller.leases.access import KEY_FILE, AccessVault, split_access


def test_without_a_configured_key_one_is_made_once_and_kept(tmp_path: Path) -> None:
    first = AccessVault.from_settings(None, tmp_path)
    sealed = first.seal({"token": "s3cret-token"})
    assert sealed is not None and "s3cret" not in sealed
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    again = AccessVault.from_settings(None, tmp_path)  # a restart, or another worker on this data dir
    assert again.open(sealed, "l1") == {"token": "s3cret-token"}


def test_a_rotated_key_still_opens_old_access_and_a_foreign_key_opens_nothing(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed = AccessVault.from_settings(old, tmp_path).seal({"token": "t"})
    assert AccessVault.from_settings(f"{new},{old}", tmp_path).open(sealed, "l1") == {"token": "t"}
    assert AccessVault.from_settings(new, tmp_path).open(sealed, "l1") is None
    with pytest.raises(ValueError, match="lease_access_key"):
        AccessVault.from_settings("not-a-key", tmp_path)


def test_the_access_leaves_the_result_before_it_is_stored() -> None:
    rest, access = split_access({"namespace": "n", "access": {"token": "t"}})
    assert rest == {"namespace": "n"} and access == {"token": "t"}
    assert split_access({"namespace": "n"}) == ({"namespace": "n"}, None)
    assert AccessVault.ephemeral().seal(None) is None


def test_workers_starting_together_share_one_key_and_never_read_half_a_file(tmp_path: Path) -> None:
    """Serve workers made at once on one data directory: every one opens what any other sealed."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        vaults = list(pool.map(lambda _: AccessVault.from_settings(None, tmp_path), range(16)))
    sealed = vaults[0].seal({"k": "v"})
    assert all(v.open(sealed, "l") == {"k": "v"} for v in vaults)
    assert sorted(p.name for p in tmp_path.iterdir()) == [KEY_FILE]  # no temporary files left
