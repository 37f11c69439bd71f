"""The two AWS Resource Groups calls a capacity reservation group needs that moto 5.2.5 does not answer, for the
AWS double (``devservices.aws_double``): ``GroupResources`` and ``ListGroupResources``.

The API is REST-JSON (``POST /group-resources``, ``POST /list-group-resources``), shaped after the AWS Resource
Groups API reference: ``Group`` is a group name or ARN (``GroupName`` the deprecated spelling); the group must
exist in moto (which makes, gets and configures groups); members are capacity reservation ARNs
(``arn:aws:ec2:<region>:<account>:capacity-reservation/cr-…``) of reservations the double knows, others are
listed under ``Failed``. ``ListGroupResources`` takes the ``resource-type`` filter, ``MaxResults`` 1..50 and a
``NextToken``; each resource comes as ``Resources[].Identifier`` and in the older ``ResourceIdentifiers``. Errors
are ``{"__type": code, "Message": …}`` with the code in ``x-amzn-ErrorType`` (``BadRequestException``,
``NotFoundException``), as botocore reads REST-JSON errors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drivers.eks.capacity import RESERVATION_RESOURCE_TYPE, reservation_id_from_arn
from drivers.eks.errors import CapacityError

RESOURCE_GROUPS_PATHS = frozenset({"/group-resources", "/list-group-resources"})
Moto = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]]]


def _fault(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"__type": code, "Message": message}


def _name(group: str) -> str:
    return group.rpartition(":group/")[2] if group.startswith("arn:") else group


def resource_groups_call(double: Any, path: str, body: dict[str, Any], moto: Moto) -> tuple[int, dict[str, Any]]:
    """Answer one call; ``moto(path, payload)`` asks moto (to see that the group exists)."""
    group = body.get("Group") or body.get("GroupName")
    if not isinstance(group, str) or not group:
        return _fault(400, "BadRequestException", "Group: a group name or ARN is required")
    status, found = moto("/get-group", {"GroupName": _name(group)})
    if status != 200:
        return _fault(404, "NotFoundException", found.get("Message") or f"Cannot find group {_name(group)}.")
    arn = found["Group"]["GroupArn"]
    if path == "/group-resources":
        return 200, _group_resources(double, _name(group), body.get("ResourceArns"))
    return _list_group_resources(double, _name(group), arn, body)


def _group_resources(double: Any, group: str, arns: Any) -> dict[str, Any]:
    succeeded, failed = [], []
    for arn in arns or []:
        rid = reservation_id_from_arn(str(arn))
        try:
            if rid is None:
                raise CapacityError("InvalidResourceType", f"{arn} is not a capacity reservation")
            double.capacity.group_resources(group, [rid])
            succeeded.append(arn)
        except CapacityError as exc:
            failed.append({"ResourceArn": arn, "ErrorCode": exc.code, "ErrorMessage": exc.message})
    return {"Succeeded": succeeded, "Failed": failed, "Pending": []}


def _list_group_resources(double: Any, group: str, group_arn: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    size = body.get("MaxResults", 50)
    if not isinstance(size, int) or not 1 <= size <= 50:
        return _fault(400, "BadRequestException", "MaxResults must be between 1 and 50")
    types: set[str] | None = None
    for f in body.get("Filters") or []:
        if f.get("Name") != "resource-type":
            return _fault(400, "BadRequestException", f"Filters: unknown filter name {f.get('Name')!r}")
        types = set(f.get("Values") or [])
    try:
        ids = double.capacity.group_reservation_ids(group)
    except CapacityError:
        ids = []  # a group moto knows with nothing added yet
    region, account = group_arn.split(":")[3], group_arn.split(":")[4]
    resources = [
        {
            "ResourceArn": f"arn:aws:ec2:{region}:{account}:capacity-reservation/{rid}",
            "ResourceType": RESERVATION_RESOURCE_TYPE,
        }
        for rid in ids
        if types is None or RESERVATION_RESOURCE_TYPE in types
    ]
    start = int(body.get("NextToken") or 0)
    page = resources[start : start + size]
    out: dict[str, Any] = {
        "Resources": [{"Identifier": r} for r in page],
        "ResourceIdentifiers": page,
        "QueryErrors": [],
    }
    if start + size < len(resources):
        out["NextToken"] = str(start + size)
    return 200, out
