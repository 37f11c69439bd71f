"""List ``continue`` tokens in kube-apiserver's format (base64url JSON ``{v, rv, start}``).

Part of the Kubernetes API emulator ``devservices.kube_emulator`` (see its docstring).
"""

from __future__ import annotations

import base64
import binascii
import json

from devservices.kube_emulator.resources import ApiError

_CONTINUE_VERSION = "meta.k8s.io/v1"
_CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new list "
    "without the continue parameter, or use the continue token in this response to retrieve the remainder of the "
    "results. Continuing with the provided token results in an inconsistent list - objects that were created, "
    "modified, or deleted between the time the first chunk was returned and now may show up in the list."
)


def encode_continue(start: str, revision: int) -> str:
    """A continue token as kube-apiserver makes one: base64url(JSON {v, rv, start}), start = the next key."""
    raw = json.dumps({"v": _CONTINUE_VERSION, "rv": revision, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[str, int]:
    try:
        doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(doc, dict) or doc.get("v") != _CONTINUE_VERSION:
            raise ValueError(
                f"continue key is not valid: incorrect encoded start resourceVersion (version {_CONTINUE_VERSION})"
            )
        start, revision = doc.get("start"), doc.get("rv")
        if not isinstance(start, str) or not isinstance(revision, int) or ".." in start.split("/"):
            raise ValueError("continue key is not valid")
    except (ValueError, binascii.Error) as exc:
        raise ApiError(400, "BadRequest", f"invalid continue token: {exc}") from None
    return start, revision
