"""Secrets out of text: URL userinfo and gpufabric tokens, in log records and in anything the API returns.

A secret can hide in a value whose field name says nothing (``auth_url: http://admin:pw@keystone/v3``), and an
exception message from a client library repeats it (keystoneauth: "Unable to establish connection to
http://admin:pw@..."). :func:`redact_text` masks such values wherever they appear; :func:`install_log_redaction`
applies it to every log record of the process (message, arguments and traceback) when the record is made, so no
handler, formatter or test capture ever sees the secret.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Callable
from typing import Any

MASK = "***"

# scheme://userinfo@ : the userinfo (user:password, or a lone token) is masked; the user name of user:password is
# kept so the value still says which account it uses.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<userinfo>[^\s/?#@\"'<>]+)@")
# gpufabric tokens: gf<kind>_<key id>_<secret>; the key id stays (it names the token, e.g. in the audit log).
_TOKEN = re.compile(r"\b(?P<head>gf[a-z]_[0-9a-f]{6,32}_)[A-Za-z0-9_\-]{16,}")


def _userinfo(match: re.Match[str]) -> str:
    userinfo = match.group("userinfo")
    user, colon, _password = userinfo.partition(":")
    masked = f"{user}:{MASK}" if colon else MASK
    return f"{match.group('scheme')}{masked}@"


def redact_text(text: str) -> str:
    """``text`` with URL userinfo and gpufabric token secrets masked (unchanged when it holds neither)."""
    if "@" in text:
        text = _URL_USERINFO.sub(_userinfo, text)
    if "gf" in text:
        text = _TOKEN.sub(lambda m: m.group("head") + MASK, text)
    return text


def redact(value: Any) -> Any:
    """Every string in a JSON-like value through :func:`redact_text`."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def redact_record(record: logging.LogRecord) -> None:
    """Mask secrets in a record's message, arguments and traceback (in place)."""
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: leave it for the handler to report
        return
    cleaned = redact_text(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and record.exc_info[0] is not None:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        cleaned = redact_text(text)
        if cleaned != text:
            # Formatters print exc_text when it is set; the exception objects (whose messages hold the secret)
            # are dropped from the record.
            record.exc_info, record.exc_text = None, cleaned
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)


_INSTALLED = "_gpufabric_redacting"


def install_log_redaction() -> None:
    """Make every log record of this process pass through :func:`redact_record` (idempotent)."""
    previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()
    if getattr(previous, _INSTALLED, False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redact_record(record)
        return record

    setattr(factory, _INSTALLED, True)
    logging.setLogRecordFactory(factory)
