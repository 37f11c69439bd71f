"""Stub Glance and an empty Neutron for nova-api and nova-compute in tests (standard library only).

Glance: ``GET /v2/images/<id>`` answers an active raw image for any id, ``GET /v2/schemas/image`` a minimal schema,
``GET /v2/images/<id>/file`` a few bytes. Neutron: every list (``/v2.0/ports``, ``/v2.0/networks``...) is empty,
``/v2.0/extensions`` too. Prints ``LISTENING <port>``.

    python fake_glance_neutron.py 127.0.0.1 0
"""

from __future__ import annotations

import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_IMAGE = {
    "status": "active",
    "name": "gpufabric-test-image",
    "container_format": "bare",
    "disk_format": "raw",
    "visibility": "public",
    "size": 4,
    "virtual_size": 4,
    "min_disk": 0,
    "min_ram": 0,
    "protected": False,
    "tags": [],
    "owner": "admin",
    "checksum": "00000000000000000000000000000000",
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
}


_SCHEMA = {
    "name": "image",
    "properties": {
        **{
            k: {"type": ["null", "string"]}
            for k in (
                "id",
                "name",
                "status",
                "container_format",
                "disk_format",
                "visibility",
                "owner",
                "checksum",
                "created_at",
                "updated_at",
                "file",
                "self",
                "schema",
                "os_hash_algo",
                "os_hash_value",
            )
        },
        **{k: {"type": ["null", "integer"]} for k in ("size", "virtual_size", "min_disk", "min_ram")},
        "protected": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "additionalProperties": {"type": "string"},
}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("", "/v2", "/v2.0"):
            self._json(200, {"versions": [{"id": "v2.0", "status": "CURRENT", "links": []}]})
        elif path.startswith("/v2/schemas/"):
            self._json(200, _SCHEMA)
        elif path.startswith("/v2/images/") and path.endswith("/file"):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"\0\0\0\0")
        elif path.startswith("/v2/images/"):
            image_id = path.split("/")[3]
            self._json(200, {**_IMAGE, "id": image_id, "file": f"/v2/images/{image_id}/file", "self": path})
        elif path == "/v2/images":
            self._json(200, {"images": []})
        elif path.startswith("/v2.0/"):
            resource = path.split("/")[2]
            self._json(200, {resource: []})
        else:
            self._json(404, {"error": f"stub: no {path}"})

    def do_POST(self) -> None:
        self._json(404, {"error": "stub: read only"})


def main() -> int:
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except (KeyboardInterrupt, SystemExit):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
