"""The CLI's own config file: the controller URL and API token that `gpufabric login` saved.

It lives at ``$GPUFABRIC_CLI_CONFIG``, else ``$XDG_CONFIG_HOME/gpufabric/config.yaml``, else
``~/.config/gpufabric/config.yaml``. ``GPUFABRIC_CONFIG`` is not used for it: that variable already names the
controller's settings file (``--config`` of ``gpufabric controller serve`` and ``gpufabric admin``), and one
variable naming two different files would make either command read the other's.

The file holds a secret, so it is written ``0600`` (its directory ``0700`` when created) through a temporary
file renamed into place: a reader sees the old file or the new one, and the secret is never world-readable, even
for a moment or when the file existed before with wider permissions.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

CONFIG_ENV = "GPUFABRIC_CLI_CONFIG"


class CredentialsError(Exception):
    """The config file exists but cannot be read or is not what `gpufabric login` writes."""


@dataclass(frozen=True)
class SavedLogin:
    controller: str | None
    token: str | None


def config_path() -> Path:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gpufabric" / "config.yaml"


def load(path: Path | None = None) -> SavedLogin:
    """What the config file holds; both fields ``None`` when there is no file."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return SavedLogin(None, None)
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CredentialsError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return SavedLogin(None, None)
    if not isinstance(data, dict):
        raise CredentialsError(f"{path} must be a mapping with controller and token (run `gpufabric login`)")
    values = {key: data.get(key) for key in ("controller", "token")}
    for key, value in values.items():
        if value is not None and not isinstance(value, str):
            raise CredentialsError(f"{path}: {key} must be a string")
    return SavedLogin(values["controller"], values["token"])


def save(controller: str, token: str, path: Path | None = None) -> Path:
    """Write the file (mode 0600) and return its path."""
    path = path or config_path()
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = yaml.safe_dump({"controller": controller, "token": token}, sort_keys=False)
    # mkstemp creates the file 0600 whatever the umask; os.replace keeps that mode on the final name.
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".yaml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove(path: Path | None = None) -> Path | None:
    """Delete the file; its path, or ``None`` when there was none."""
    path = path or config_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path
