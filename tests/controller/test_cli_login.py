"""`gpufabric login | logout | whoami` against a real controller: the token is checked before anything is
written, the file is 0600, the other commands read it, and flags beat the environment which beats the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.cli_helpers import Cli, assert_one_line_error, file_mode, isolated_cli, sqlite_url
from tests.support.controller import Controller


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    return isolated_cli(monkeypatch, tmp_path)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask that would make a plain open() world-readable: the 0600 must come from the code."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_login_checks_the_token_and_writes_a_private_file(cli: Cli, controller: Controller, loose_umask: None) -> None:
    result = cli("login", "--controller", controller.url + "/", "--token", controller.admin_token)
    assert result.exit_code == 0, result.output
    assert f"logged in to {controller.url} as admin test-admin" in result.stdout
    assert file_mode(cli.config) == 0o600
    assert file_mode(cli.config.parent) == 0o700
    assert yaml.safe_load(cli.config.read_text()) == {"controller": controller.url, "token": controller.admin_token}

    # Later commands need neither flag nor variable.
    who = cli("whoami", "--json")
    assert who.exit_code == 0, who.output
    assert json.loads(who.stdout) == {"role": "admin", "name": "test-admin", "tenant": None, "host": None}
    hosts = cli("hosts", "list", "--json")
    assert hosts.exit_code == 0 and json.loads(hosts.stdout) == []


def test_login_reads_the_token_from_stdin_and_tightens_an_existing_file(
    cli: Cli, controller: Controller, loose_umask: None
) -> None:
    cli.config.parent.mkdir(parents=True)
    cli.config.write_text("controller: http://old.example:8080\ntoken: gft_old\n")
    cli.config.chmod(0o644)
    result = cli("login", "--controller", controller.url, "--json", input=controller.tenant_token + "\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tenant"] == "acme"
    assert file_mode(cli.config) == 0o600
    assert yaml.safe_load(cli.config.read_text())["token"] == controller.tenant_token
    assert controller.tenant_token not in result.output


def test_login_without_controller_takes_the_saved_one(cli: Cli, controller: Controller) -> None:
    assert cli("login", "--controller", controller.url, "--token", controller.admin_token).exit_code == 0
    again = cli("login", input=controller.tenant_token + "\n")
    assert again.exit_code == 0, again.output
    assert f"logged in to {controller.url} as tenant test-tenant (tenant acme)" in again.stdout


def test_a_refused_token_is_not_saved(cli: Cli, controller: Controller) -> None:
    result = cli("login", "--controller", controller.url, "--token", "gft_nope_nope")
    assert_one_line_error(result, 2, "HTTP 401", "gpufabric login")
    assert not cli.config.exists()
    empty = cli("login", "--controller", controller.url, input="\n")
    assert_one_line_error(empty, 2, "no token on standard input")
    assert not cli.config.exists()


def test_default_path_is_under_xdg_config_home(
    cli: Cli, controller: Controller, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("GPUFABRIC_CLI_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert cli("login", "--controller", controller.url, "--token", controller.admin_token).exit_code == 0
    written = tmp_path / "xdg" / "gpufabric" / "config.yaml"
    assert file_mode(written) == 0o600
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert cli("login", "--controller", controller.url, "--token", controller.admin_token).exit_code == 0
    assert file_mode(tmp_path / "home" / ".config" / "gpufabric" / "config.yaml") == 0o600


def test_logout_removes_the_file(cli: Cli, controller: Controller) -> None:
    assert cli("login", "--controller", controller.url, "--token", controller.admin_token).exit_code == 0
    out = cli("logout")
    assert out.exit_code == 0 and f"removed {cli.config}" in out.stdout
    assert not cli.config.exists()
    again = cli("logout", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout) == {"removed": None}
    assert_one_line_error(cli("lease", "list"), 2, "no API token", "gpufabric login")


def test_flags_beat_the_environment_which_beats_the_file(
    cli: Cli, controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("login", "--controller", controller.url, "--token", controller.tenant_token).exit_code == 0

    def role(*args: str) -> str:
        result = cli("whoami", "--json", *args)
        assert result.exit_code == 0, result.output
        return str(json.loads(result.stdout)["role"])

    assert role() == "tenant"
    monkeypatch.setenv("GPUFABRIC_TOKEN", controller.admin_token)
    assert role() == "admin"
    assert role("--token", controller.bootstrap_token) == "agent-bootstrap"
    # A controller URL from the environment with the saved (matching) login's token.
    monkeypatch.delenv("GPUFABRIC_TOKEN")
    monkeypatch.setenv("GPUFABRIC_CONTROLLER_URL", controller.url)
    assert role() == "tenant"


def test_the_saved_token_goes_only_to_the_saved_controller(cli: Cli, controller: Controller) -> None:
    assert cli("login", "--controller", controller.url, "--token", controller.admin_token).exit_code == 0
    other = "http://127.0.0.1:9"
    result = cli("whoami", "--controller", other)
    assert_one_line_error(result, 2, f"no API token for {other}", f"saved login is for {controller.url}")


def test_a_broken_config_file_is_one_line(cli: Cli, controller: Controller) -> None:
    cli.config.parent.mkdir(parents=True)
    cli.config.write_text("- just\n- a list\n")
    assert_one_line_error(cli("lease", "list"), 2, str(cli.config), "gpufabric login")
    cli.config.write_text("controller: [unclosed\n")
    assert_one_line_error(cli("lease", "list"), 2, str(cli.config), "not valid YAML")


def test_the_installed_command_logs_in_from_a_pipe(controller: Controller, tmp_path: Path) -> None:
    """The real entry point in its own process: stdin is a pipe there as it is for `... | gpufabric login`."""
    gpufabric = Path(sys.executable).with_name("gpufabric")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUFABRIC_")}
    env["GPUFABRIC_CLI_CONFIG"] = str(tmp_path / "config.yaml")
    login = subprocess.run(
        [str(gpufabric), "login", "--controller", controller.url],
        input=controller.admin_token + "\n",
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert login.returncode == 0, login.stderr
    listed = subprocess.run([str(gpufabric), "lease", "list", "--json"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stderr
