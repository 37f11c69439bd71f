"""Options and output helpers shared by controller commands.

The commands that call the controller's REST API take ``--controller`` and ``--token`` (``ControllerOption``,
``TokenOption``); a value missing there comes from ``GPUFABRIC_CONTROLLER_URL`` / ``GPUFABRIC_TOKEN``, then from
the file `gpufabric login` wrote (``controller.cli.credentials``). ``api_client`` turns every transport failure
into one line naming the URL, ``checked`` every refusal into one line with the problem's title, detail and
fields. Exit codes: 2 the controller refused the request (4xx) or the command line is wrong, 3 the controller
could not be reached or failed (connection, DNS, timeout, 5xx, an answer that is not the API's).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.text import Text

from controller.cli import credentials
from controller.settings import Settings, load_settings

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="GPUFABRIC_CONFIG", help="YAML or TOML settings file"),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Overrides GPUFABRIC_DATABASE_URL and the config file"),
]
# Commands that talk to a running controller over its REST API.
DEFAULT_CONTROLLER = "http://127.0.0.1:8080"
ControllerOption = Annotated[
    str | None,
    typer.Option(
        "--controller",
        envvar="GPUFABRIC_CONTROLLER_URL",
        help=f"Controller URL (default: the one `gpufabric login` saved, else {DEFAULT_CONTROLLER})",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="GPUFABRIC_TOKEN",
        help="API token (default: the one `gpufabric login` saved)",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the controller's answer as JSON")]

REQUEST_TIMEOUT_ENV = "GPUFABRIC_REQUEST_TIMEOUT"
DEFAULT_REQUEST_TIMEOUT_S = 30.0
NOT_REACHED = 3
REFUSED = 2

# No emoji codes (a PCI bus id such as 00000000:AB:00.0 holds ":AB:") and, when the output is not a terminal,
# no wrapping at 80 columns (URLs and ids stay whole in pipes and logs).
console = Console(emoji=False, width=None if sys.stdout.isatty() else 1000)
err_console = Console(stderr=True, emoji=False, width=None if sys.stderr.isatty() else 1000)


def fail(message: str, code: int = 1) -> typer.Exit:
    # The message is data, not markup: brackets in it (a label, a URL) are printed as they are.
    err_console.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    return typer.Exit(code)


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def print_json(data: Any) -> None:
    """The API's JSON as it came (re-indented), on stdout without any rich processing."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def controller_url(controller: str | None) -> str:
    """The URL the REST commands use: the flag or env, else the saved login's, else the local default."""
    if controller:
        return checked_url(controller)
    return checked_url(saved_login().controller or DEFAULT_CONTROLLER)


def checked_url(url: str) -> str:
    url = url.strip().rstrip("/")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise fail(f"controller URL {url!r} is not valid: {exc}", REFUSED) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise fail(f"controller URL {url!r} must be http://HOST[:PORT] or https://HOST[:PORT]", REFUSED)
    return url


def saved_login() -> credentials.SavedLogin:
    try:
        return credentials.load()
    except credentials.CredentialsError as exc:
        raise fail(str(exc), REFUSED) from None


def resolve(controller: str | None, token: str | None) -> tuple[str, str]:
    """``(url, token)`` from the flags (or their env variables), then the saved login.

    The saved token goes only to the saved controller: sending it to another URL given on the command line
    would hand the secret to whatever answers there."""
    url = controller_url(controller)
    if token:
        return url, token
    saved = saved_login()
    if saved.token and saved.controller and checked_url(saved.controller) == url:
        return url, saved.token
    hint = "pass --token, set GPUFABRIC_TOKEN or run `gpufabric login`"
    if saved.token and saved.controller:
        raise fail(f"no API token for {url} (the saved login is for {saved.controller}): {hint}", REFUSED)
    raise fail(f"no API token: {hint}", REFUSED)


@contextmanager
def api_client(controller: str | None, token: str | None) -> Iterator[httpx.Client]:
    """A client for the controller's REST API with the token; a failure to reach it ends the command in one
    line naming the URL (exit 3)."""
    url, secret = resolve(controller, token)
    timeout = request_timeout()
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"}, timeout=timeout) as client:
            yield client
    except httpx.TimeoutException:
        raise fail(
            f"the controller at {url} did not answer within {timeout:g} s ({REQUEST_TIMEOUT_ENV})", NOT_REACHED
        ) from None
    except httpx.HTTPError as exc:
        reason = one_line(str(exc)) or type(exc).__name__
        raise fail(f"cannot reach the controller at {url}: {reason}", NOT_REACHED) from None


def request_timeout() -> float:
    """Seconds one HTTP request may take (``GPUFABRIC_REQUEST_TIMEOUT``, default 30)."""
    raw = os.environ.get(REQUEST_TIMEOUT_ENV)
    if not raw:
        return DEFAULT_REQUEST_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise fail(f"{REQUEST_TIMEOUT_ENV} must be a positive number of seconds, not {raw!r}", REFUSED)
    return value


def problem_message(response: httpx.Response) -> str:
    """One line for a refusal: ``HTTP 422: Title: detail; field: message``. Non-problem bodies are cut short."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("title" in body or "detail" in body):
        message = f"{body.get('title') or response.reason_phrase}: {body.get('detail') or ''}".rstrip(": ")
        errors = body.get("errors")
        for error in errors if isinstance(errors, list) else []:
            if not isinstance(error, dict):
                continue
            where = ".".join(str(part) for part in error.get("loc") or [])
            what = f"{where}: {error.get('msg')}" if error.get("msg") else where
            if where and what not in message:
                message += f"; {what}"
        message = one_line(message, 1000)
    else:
        message = one_line(response.text) or response.reason_phrase
    if response.status_code == 401:
        message += " (check the token: --token, GPUFABRIC_TOKEN or `gpufabric login`)"
    return f"HTTP {response.status_code}: {message}"


def _body(response: httpx.Response, as_json: bool, explain: Callable[[dict[str, Any]], None] | None) -> Any:
    if response.status_code >= 400:
        try:
            problem = response.json()
        except ValueError:
            problem = None
        if as_json and isinstance(problem, dict):
            print_json(problem)  # scripts read the refusal's fields from stdout; the one line goes to stderr
        error = fail(problem_message(response), NOT_REACHED if response.status_code >= 500 else REFUSED)
        if explain is not None and isinstance(problem, dict) and not as_json:
            explain(problem)
        raise error
    try:
        return response.json()
    except ValueError:
        raise fail(
            f"{response.request.url} answered HTTP {response.status_code} with something other than JSON "
            "(is that a gpufabric controller?)",
            NOT_REACHED,
        ) from None


def checked(
    response: httpx.Response,
    as_json: bool = False,
    explain: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """The JSON object of a successful answer. A refusal becomes a one-line error (exit 2; 3 for a 5xx); with
    ``as_json`` the problem document is printed on stdout too, ``explain`` may add lines about it."""
    data = _body(response, as_json, explain)
    if not isinstance(data, dict):
        raise fail(f"{response.request.url} answered a {type(data).__name__}, not an object", NOT_REACHED)
    return data


def checked_list(response: httpx.Response, as_json: bool = False) -> list[dict[str, Any]]:
    """The JSON array of a successful list answer; refusals as for :func:`checked`."""
    data = _body(response, as_json, None)
    if not isinstance(data, list):
        raise fail(f"{response.request.url} answered a {type(data).__name__}, not a list", NOT_REACHED)
    return data


def settings_or_exit(config: Path | None, database_url: str | None = None, **overrides: object) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if database_url:
        values["database_url"] = database_url
    try:
        return load_settings(config, **values)
    except (FileNotFoundError, ValueError) as exc:
        raise fail(f"settings: {exc}", 2) from None
