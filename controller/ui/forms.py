"""Reading the dashboard's form posts: url-encoded fields, NUL refused, the CSRF token checked first."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import Request

from controller.ui.errors import UiError
from controller.ui.session import UiSession, check_csrf

MAX_FIELD_CHARS = 65536


async def form_fields(request: Request) -> dict[str, str]:
    """The posted fields (the last value of each name). A NUL anywhere, or a field too long, is 422."""
    body = await request.body()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise UiError(422, "the form was not sent as UTF-8") from None
    fields: dict[str, str] = {}
    for name, values in parse_qs(text, keep_blank_values=True).items():
        value = values[-1]
        if "\x00" in name or "\x00" in value:
            raise UiError(422, f"field {name.replace(chr(0), '')!r} contains a NUL character")
        if len(value) > MAX_FIELD_CHARS:
            raise UiError(422, f"field {name!r} is longer than {MAX_FIELD_CHARS} characters")
        fields[name] = value
    return fields


async def checked_form(request: Request, session: UiSession) -> dict[str, str]:
    """The posted fields, once the form's CSRF token matched the session's (else 403, nothing done)."""
    fields = await form_fields(request)
    check_csrf(session, fields.get("csrf"))
    return fields
