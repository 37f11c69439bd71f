"""The project's AWS test double: the EC2 calls moto 5.2.5 does not answer, in front of a moto server.

boto3 is pointed at this server's URL. A POST whose form ``Action`` is one of :data:`EMULATED` is answered here
(EC2 Query protocol, shaped by botocore's EC2 model: ``devservices.ec2_query``); every other request (all of
EKS, the rest of EC2, moto's ``/moto-api``) is passed to moto unchanged.

Emulated, with the semantics of :class:`drivers.eks.capacity.FakeCapacity` (checks listed there and in
docs/eks.md): ``CreatePlacementGroup``, ``DescribePlacementGroups``, ``DeletePlacementGroup``,
``CreateCapacityReservation``, ``DescribeCapacityReservations`` (paginated), ``DescribeCapacityBlockOfferings``,
``PurchaseCapacityBlock``; and ``DescribeInstanceTopology`` over the instances a test registers (EKS nodes of
the Kubernetes emulator are not moto instances): at most 100 ``InstanceId``s, ``MaxResults`` 1..100 (default
20) and not together with instance ids, ``GroupName`` and the ``availability-zone`` / ``instance-type``
filters, unknown ids ``InvalidInstanceID.NotFound``, network nodes only for the supported instance types
(others are listed with none, as EC2 does). Of AWS Resource Groups (REST-JSON; moto makes, gets and configures the
groups but answers these two with "not yet implemented"): ``GroupResources`` (capacity reservation ARNs into a
group moto knows) and ``ListGroupResources`` (``resource-type`` filter, ``MaxResults`` 1..50, ``NextToken``). Test controls (JSON over POST): ``/_double/reset``,
``/_double/instances``, ``/_double/offerings``, ``/_double/consume``.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from devservices.ec2_query import error_xml, parse_request, response_xml
from devservices.moto_server import free_port
from devservices.resource_groups_double import RESOURCE_GROUPS_PATHS, resource_groups_call
from drivers.eks.capacity import CapacityReservation, PlacementGroup
from drivers.eks.capacity_fake import FakeCapacity
from drivers.eks.errors import CapacityError

EMULATED = frozenset(
    {
        "DescribeInstanceTopology",
        "CreatePlacementGroup",
        "DescribePlacementGroups",
        "DeletePlacementGroup",
        "CreateCapacityReservation",
        "DescribeCapacityReservations",
        "DescribeCapacityBlockOfferings",
        "PurchaseCapacityBlock",
    }
)
# The instance types DescribeInstanceTopology describes (EC2 User Guide, "instance topology prerequisites").
TOPOLOGY_FAMILIES = ("hpc6a.", "hpc6id.", "hpc7a.", "hpc7g.", "p3dn.", "p4d.", "p4de.", "p5.", "p5e.", "p5en.")
TOPOLOGY_FAMILIES += ("p6-b200.", "trn1.", "trn1n.", "trn2.")


class Ec2Fault(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class AwsDouble:
    """A threaded HTTP server in this process; ``url`` is what boto3's ``endpoint_url`` gets."""

    def __init__(self, upstream: str, region: str = "us-east-1", port: int | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.region = region
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.calls: list[tuple[str, dict[str, Any]]] = []  # emulated actions seen, for tests that count calls
        self._server: ThreadingHTTPServer | None = None
        self.reset_state()

    def reset_state(self) -> None:
        self.capacity = FakeCapacity(self.region)
        self.instances: dict[str, dict[str, Any]] = {}
        self.calls = []

    # -- test controls ------------------------------------------------------------------------------------

    def add_instances(self, instances: list[dict[str, Any]]) -> None:
        """``{instance_id, instance_type, availability_zone, network_nodes?, group_name?}`` each."""
        for item in instances:
            self.instances[item["instance_id"]] = dict(item)

    # -- the emulated actions -----------------------------------------------------------------------------

    def handle(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((action, params))
        try:
            return getattr(self, "_" + action)(params)  # type: ignore[no-any-return]
        except CapacityError as exc:
            raise Ec2Fault(exc.code, exc.message) from None

    def _DescribeInstanceTopology(self, p: dict[str, Any]) -> dict[str, Any]:
        ids = p.get("InstanceIds") or []
        if len(ids) > 100:
            raise Ec2Fault("InvalidParameterValue", f"InstanceIds: at most 100 ids per request, got {len(ids)}")
        if ids and "MaxResults" in p:
            raise Ec2Fault("InvalidParameterCombination", "MaxResults cannot be used with InstanceIds")
        size = p.get("MaxResults", 20 if not ids else 100)
        if not 1 <= size <= 100:
            raise Ec2Fault("InvalidParameterValue", "MaxResults must be between 1 and 100")
        missing = [i for i in ids if i not in self.instances]
        if missing:
            raise Ec2Fault("InvalidInstanceID.NotFound", f"The instance ID '{missing[0]}' does not exist")
        selected = [self.instances[i] for i in ids] if ids else list(self.instances.values())
        groups = set(p.get("GroupNames") or [])
        for f in p.get("Filters") or []:
            values = set(f.get("Values") or [])
            if f["Name"] == "availability-zone":
                selected = [i for i in selected if i["availability_zone"] in values]
            elif f["Name"] == "instance-type":
                selected = [i for i in selected if any(_type_matches(i["instance_type"], v) for v in values)]
            else:
                raise Ec2Fault("InvalidParameterValue", f"The filter '{f['Name']}' is invalid")
        if groups:
            selected = [i for i in selected if i.get("group_name") in groups]
        start = int(p.get("NextToken") or 0)
        page = selected[start : start + size]
        out: dict[str, Any] = {"Instances": [self._topology(i) for i in page]}
        if start + size < len(selected):
            out["NextToken"] = str(start + size)
        return out

    def _topology(self, item: dict[str, Any]) -> dict[str, Any]:
        supported = item["instance_type"].startswith(TOPOLOGY_FAMILIES)
        return {
            "InstanceId": item["instance_id"],
            "InstanceType": item["instance_type"],
            "GroupName": item.get("group_name"),
            "NetworkNodes": list(item.get("network_nodes") or []) if supported else [],
            "AvailabilityZone": item["availability_zone"],
            "ZoneId": f"use1-az{ord(item['availability_zone'][-1]) - ord('a') + 1}",
        }

    def _CreatePlacementGroup(self, p: dict[str, Any]) -> dict[str, Any]:
        group = self.capacity.create_placement_group(p["GroupName"], p.get("Strategy"), p.get("PartitionCount"))
        return {"PlacementGroup": _group(group)}

    def _DescribePlacementGroups(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"PlacementGroups": [_group(g) for g in self.capacity.describe_placement_groups(p.get("GroupNames"))]}

    def _DeletePlacementGroup(self, p: dict[str, Any]) -> dict[str, Any]:
        self.capacity.delete_placement_group(p["GroupName"])
        return {}

    def _CreateCapacityReservation(self, p: dict[str, Any]) -> dict[str, Any]:
        for field in ("InstanceType", "InstancePlatform", "InstanceCount"):
            if field not in p:
                raise Ec2Fault("MissingParameter", f"The request must contain the parameter {field}")
        if "AvailabilityZone" not in p:
            raise Ec2Fault("MissingParameter", "The request must contain the parameter AvailabilityZone")
        group = p.get("PlacementGroupArn", "").rpartition("/")[2] or None
        reservation = self.capacity.add_reservation(
            p["InstanceType"],
            p["AvailabilityZone"],
            p["InstanceCount"],
            end=p.get("EndDate"),
            placement_group=group,
            instance_match_criteria=p.get("InstanceMatchCriteria", "open"),
        )
        return {"CapacityReservation": _reservation(reservation, self.region)}

    def _DescribeCapacityReservations(self, p: dict[str, Any]) -> dict[str, Any]:
        filters = {f["Name"]: f.get("Values") or [] for f in p.get("Filters") or []}
        unknown = sorted(set(filters) - {"instance-type", "availability-zone", "state", "reservation-type"})
        if unknown:
            raise Ec2Fault("InvalidParameterValue", f"The filter '{unknown[0]}' is invalid")
        found = self.capacity.describe_capacity_reservations(p.get("CapacityReservationIds"))
        for name, attr in (
            ("instance-type", "instance_type"),
            ("availability-zone", "availability_zone"),
            ("state", "state"),
            ("reservation-type", "reservation_type"),
        ):
            if name in filters:
                found = [r for r in found if getattr(r, attr) in filters[name]]
        size = p.get("MaxResults", 1000)
        start = int(p.get("NextToken") or 0)
        out: dict[str, Any] = {
            "CapacityReservations": [_reservation(r, self.region) for r in found[start : start + size]]
        }
        if start + size < len(found):
            out["NextToken"] = str(start + size)
        return out

    def _DescribeCapacityBlockOfferings(self, p: dict[str, Any]) -> dict[str, Any]:
        offerings = self.capacity.describe_capacity_block_offerings(
            p["InstanceType"],
            p["InstanceCount"],
            p["CapacityDurationHours"],
            p.get("StartDateRange"),
            p.get("EndDateRange"),
        )
        return {
            "CapacityBlockOfferings": [
                {
                    "CapacityBlockOfferingId": o.offering_id,
                    "InstanceType": o.instance_type,
                    "AvailabilityZone": o.availability_zone,
                    "InstanceCount": o.instance_count,
                    "StartDate": o.start,
                    "EndDate": o.end,
                    "CapacityBlockDurationHours": o.duration_hours,
                    "UpfrontFee": o.upfront_fee,
                    "CurrencyCode": o.currency,
                    "Tenancy": "default",
                }
                for o in offerings
            ]
        }

    def _PurchaseCapacityBlock(self, p: dict[str, Any]) -> dict[str, Any]:
        if p.get("InstancePlatform") != "Linux/UNIX":
            raise Ec2Fault("InvalidParameterValue", "InstancePlatform must be Linux/UNIX")
        reservation = self.capacity.purchase_capacity_block(p["CapacityBlockOfferingId"])
        return {"CapacityReservation": _reservation(reservation, self.region)}

    # -- the server -----------------------------------------------------------------------------------------

    def start(self) -> AwsDouble:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _proxy(self, body: bytes | None) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                request = urllib.request.Request(
                    double.upstream + self.path, data=body, headers=headers, method=self.command
                )
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        self._send(response.status, response.read(), dict(response.headers.items()))
                except urllib.error.HTTPError as exc:
                    self._send(exc.code, exc.read(), dict(exc.headers.items()))

            def _moto(self, path: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
                """Ask moto (this request's credentials and service scope) and return its status and JSON answer."""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                request = urllib.request.Request(
                    double.upstream + path, data=json.dumps(payload).encode(), headers=headers, method="POST"
                )
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        return response.status, json.loads(response.read() or b"{}")
                except urllib.error.HTTPError as exc:
                    return exc.code, json.loads(exc.read() or b"{}")

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self) -> None:
                self._proxy(None)

            def do_DELETE(self) -> None:
                self._proxy(None)

            def do_PUT(self) -> None:
                self._proxy(self._body())

            def do_POST(self) -> None:
                body = self._body()
                if self.path.startswith("/_double/"):
                    out = double.control(self.path.removeprefix("/_double/"), json.loads(body or b"{}"))
                    self._send(200, json.dumps(out, default=str).encode(), {"Content-Type": "application/json"})
                    return
                if self.path in RESOURCE_GROUPS_PATHS:
                    status, out = resource_groups_call(double, self.path, json.loads(body or b"{}"), self._moto)
                    headers = {"Content-Type": "application/json"}
                    if status != 200:
                        headers["x-amzn-ErrorType"] = out["__type"]
                    self._send(status, json.dumps(out).encode(), headers)
                    return
                form = {}
                if self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
                    form = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
                action = form.get("Action")
                if action not in EMULATED:
                    self._proxy(body)
                    return
                request_id = str(uuid.uuid4())
                try:
                    result = double.handle(action, parse_request(action, form))
                    self._send(200, response_xml(action, result, request_id), {"Content-Type": "text/xml"})
                except Ec2Fault as fault:
                    self._send(
                        fault.status, error_xml(fault.code, fault.message, request_id), {"Content-Type": "text/xml"}
                    )

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="aws-double", daemon=True).start()
        return self

    def control(self, what: str, payload: dict[str, Any]) -> Any:
        if what == "reset":
            self.reset_state()
            return {}
        if what == "instances":
            self.add_instances(payload["instances"])
            return {"instances": len(self.instances)}
        if what == "offerings":
            offering = self.capacity.add_capacity_block_offering(
                payload["instance_type"],
                payload["availability_zone"],
                payload["instance_count"],
                datetime.fromisoformat(payload["start"]),
                payload["duration_hours"],
            )
            return offering.model_dump(mode="json")
        if what == "consume":
            return self.capacity.consume(payload["reservation_id"], payload["count"]).model_dump(mode="json")
        return {"error": f"unknown control {what}"}

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


def _type_matches(instance_type: str, value: str) -> bool:
    return instance_type == value or (value.endswith("*") and instance_type.startswith(value[:-1]))


def _group(group: PlacementGroup) -> dict[str, Any]:
    return {
        "GroupName": group.name,
        "GroupId": group.group_id,
        "Strategy": group.strategy,
        "State": group.state,
        "PartitionCount": group.partition_count,
        "SpreadLevel": group.spread_level,
        "GroupArn": f"arn:aws:ec2:us-east-1:123456789012:placement-group/{group.name}",
    }


def _reservation(r: CapacityReservation, region: str) -> dict[str, Any]:
    return {
        "CapacityReservationId": r.reservation_id,
        "CapacityReservationArn": f"arn:aws:ec2:{region}:123456789012:capacity-reservation/{r.reservation_id}",
        "InstanceType": r.instance_type,
        "InstancePlatform": "Linux/UNIX",
        "AvailabilityZone": r.availability_zone,
        "Tenancy": "default",
        "TotalInstanceCount": r.total_count,
        "AvailableInstanceCount": r.available_count,
        "State": r.state,
        "ReservationType": r.reservation_type,
        "StartDate": r.start,
        "EndDate": r.end,
        "EndDateType": "limited" if r.end else "unlimited",
        "InstanceMatchCriteria": r.instance_match_criteria,
        "PlacementGroupArn": r.placement_group_arn,
    }
