"""The EC2 Query protocol, both directions, driven by botocore's own EC2 service model.

The AWS test double (``devservices.aws_double``) reads requests the way EC2 does (form fields such as
``InstanceId.1`` or ``Filter.1.Value.1``, named by each member's ``queryName``/``locationName``) and writes
responses as EC2 XML (elements named by ``locationName``, lists as ``<item>`` children). Taking both from the
model boto3 itself uses means a shape the double gets wrong fails in boto3's parser, as it would against AWS.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any
from xml.sax.saxutils import escape

import botocore.session
from botocore.model import ListShape, OperationModel, ServiceModel, Shape, StructureShape

NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"


@cache
def ec2_model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("ec2")


def operation(action: str) -> OperationModel:
    return ec2_model().operation_model(action)


def _query_key(name: str, member: Shape) -> str:
    """The form key of one member: EC2's ``queryName``, else its ``locationName`` capitalised, else its name."""
    if "queryName" in member.serialization:
        return str(member.serialization["queryName"])
    if "name" in member.serialization:
        location = str(member.serialization["name"])
        return location[:1].upper() + location[1:]
    return name


def parse_request(action: str, form: dict[str, str]) -> dict[str, Any]:
    """The request's parameters as boto3 would have passed them (member names, lists, ints, datetimes)."""
    shape = operation(action).input_shape
    return _parse_structure(shape, form, "") if shape is not None else {}


def _parse_structure(shape: StructureShape, form: dict[str, str], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, member in shape.members.items():
        key = prefix + _query_key(name, member)
        value = _parse(member, form, key)
        if value is not None:
            out[name] = value
    return out


def _parse(shape: Shape, form: dict[str, str], key: str) -> Any:
    if isinstance(shape, StructureShape):
        if not any(k.startswith(key + ".") for k in form):
            return None
        return _parse_structure(shape, form, key + ".")
    if isinstance(shape, ListShape):
        items = []
        i = 1
        while True:
            item = _parse(shape.member, form, f"{key}.{i}")
            if item is None:
                break
            items.append(item)
            i += 1
        return items or None
    raw = form.get(key)
    if raw is None:
        return None
    if shape.type_name in ("integer", "long"):
        return int(raw)
    if shape.type_name == "boolean":
        return raw.lower() == "true"
    if shape.type_name == "timestamp":
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return raw


def response_xml(action: str, result: dict[str, Any], request_id: str) -> bytes:
    """``<{Action}Response>`` with the members of ``result`` (named as in boto3) serialised per the model."""
    shape = operation(action).output_shape
    body = _structure_xml(shape, result) if shape is not None else ""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="{NAMESPACE}">'
        f"<requestId>{request_id}</requestId>{body}</{action}Response>"
    ).encode()


def _structure_xml(shape: StructureShape, value: dict[str, Any]) -> str:
    parts = []
    for name, member in shape.members.items():
        if value.get(name) is None:
            continue
        tag = member.serialization.get("name", name[:1].lower() + name[1:])
        parts.append(f"<{tag}>{_value_xml(member, value[name])}</{tag}>")
    return "".join(parts)


def _value_xml(shape: Shape, value: Any) -> str:
    if isinstance(shape, StructureShape):
        return _structure_xml(shape, value)
    if isinstance(shape, ListShape):
        tag = shape.member.serialization.get("name", "item")
        return "".join(f"<{tag}>{_value_xml(shape.member, v)}</{tag}>" for v in value)
    if shape.type_name == "boolean":
        return "true" if value else "false"
    if shape.type_name == "timestamp":
        when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return escape(str(value))


def error_xml(code: str, message: str, request_id: str) -> bytes:
    """EC2's error document (``<Response><Errors><Error>``), which botocore's ec2 parser reads."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
    ).encode()
