"""`gpufabric demo`: a controller on SQLite and a simulated fleet, ready to explore."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from controller.cli.common import console, fail


def demo(
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Where the demo keeps its database and agent state (default: a temp dir)"),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Controller port (0: any free port)")] = 8080,
    fleet_file: Annotated[Path | None, typer.Option("--fleet", help="Fleet YAML (default: the bundled fleet)")] = None,
    interval: Annotated[float, typer.Option("--interval", help="Agent report interval in seconds")] = 3.0,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the fleet")] = 180.0,
    exit_after_ready: Annotated[bool, typer.Option("--exit-after-ready", help="Stop once the fleet is ready")] = False,
) -> None:
    """Start the controller and a simulated fleet (H100, A100 MIG, L4 time-slicing, A16 and A100 vGPU).

    Ctrl-C (SIGINT) or SIGTERM stops the agents and the controller and removes the temp dir (not a --data-dir)."""
    from controller.demo.fleet import load_fleet
    from controller.demo.run import Demo, DemoError
    from controller.observability.logs import configure_logging
    from controller.testing import free_port

    configure_logging("WARNING")
    fleet = load_fleet(fleet_file)
    if port:
        try:
            import socket

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))
        except OSError:
            port = free_port()
    # SIGTERM (kill, systemd, a container stop) takes the same way out as Ctrl-C: the finally below stops the
    # agents, which would otherwise outlive the demo and report to nothing forever, and removes the temp dir.
    previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
    run: Demo | None = None
    temp_dir: Path | None = None
    started = time.monotonic()
    try:
        if data_dir is None:
            temp_dir = Path(tempfile.mkdtemp(prefix="gpufabric-demo-"))
        directory = data_dir or temp_dir
        assert directory is not None
        run = Demo(fleet=fleet, data_dir=directory, port=port, agent_interval_s=interval)
        url = run.start_controller()
        where = f"{directory}, removed on exit" if temp_dir else str(directory)
        console.print(f"controller on {url} (SQLite in {where})")
        run.configure()
        run.start_agents()
        console.print(f"started {len(run.agents)} simulated agents; waiting for them to report and converge ...")
        run.assign_pools(timeout)
        details = run.wait_ready(timeout)
        _print_ready(url, run.admin_token, details, time.monotonic() - started)
        shown = run.tenant_lease()
        _print_lease(url, shown)
        _print_validation(run.nccl_validation(fleet.hosts[0].name))
        _print_mig_backed_vgpu(url, run.mig_backed_vgpu_lease(shown["token"]))
        if exit_after_ready:
            return
        console.print("\nrunning; Ctrl-C to stop")
        while True:
            time.sleep(1)
            run._check_agents()
    except DemoError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        console.print("stopping")
    finally:
        # A second signal while stopping would leave agents or files behind: stop first, then restore.
        previous_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if run is not None:
                run.stop()
            if temp_dir is not None:
                shutil.rmtree(temp_dir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous_sigint)
            signal.signal(signal.SIGTERM, previous_sigterm)


def _print_lease(url: str, shown: dict[str, Any]) -> None:
    lease, released = shown["lease"], shown["released"]
    result = lease.get("result") or {}
    print("\na tenant lease (token for tenant demo-tenant created by the demo):")
    print(f"  export TENANT_TOKEN={shown['token']}")
    print(
        f"  curl -s -X POST -H \"Authorization: Bearer $TENANT_TOKEN\" -H 'Idempotency-Key: my-key-1' "
        f"-H 'Content-Type: application/json' {url}/v1/leases -d '{json.dumps(shown['request'])}'"
    )
    print(f"  -> lease {lease['id']}: {lease['state']} on {result.get('host')}, "
          f"CUDA_VISIBLE_DEVICES={result.get('cuda_visible_devices')}")  # fmt: skip
    print(f'  curl -s -X DELETE -H "Authorization: Bearer $TENANT_TOKEN" {url}/v1/leases/{lease["id"]}')
    print(f"  -> {released['state']} ({' -> '.join(t['to_state'] for t in released['transitions'])})")


def _print_validation(validation: dict[str, Any]) -> None:
    runs = validation.get("runs") or [{}]
    verdict = runs[0].get("verdict") or {}
    print(f"\nan NCCL validation of {', '.join(validation['hosts'])} (stand-in nccl-tests output: simulated): "
          f"{validation['status']}, busbw {verdict.get('measured_busbw_gbps')} GB/s "
          f"(expected {verdict.get('expected_busbw_gbps')}); its curve is on the dashboard's Validations page")  # fmt: skip


def _print_mig_backed_vgpu(url: str, shown: dict[str, Any]) -> None:
    host, lease = shown["host"], shown["lease"]
    print("\na MIG-backed vGPU (the vGPU hosts sit behind the demo's pretend hypervisor: a `fake` backend):")
    for d in host["devices"]:
        instances = ", ".join(f"{m['profile']}@{m['placement_start']}" for m in d["mig_instances"])
        mode = f"MIG mode, GPU instances {instances}" if d["mig_mode"] == "enabled" else "MIG off (time-sliced vGPU)"
        print(f"  {host['hostname']} GPU {d['index']}: {mode}")
    print(
        f"  curl -s -X POST -H \"Authorization: Bearer $TENANT_TOKEN\" -H 'Content-Type: application/json' "
        f"{url}/v1/leases -d '{json.dumps(shown['request'])}'"
    )
    for a in lease.get("allocations", []):
        p = a.get("placement") or {}
        print(
            f"  -> lease {lease['id']}: {lease['state']}, {a.get('vgpu_type')} on {a['host']} GPU instance "
            f"{a.get('profile')} at {p.get('start')}:{p.get('size')} ({a.get('mig_uuid')})"
        )
    for node in (lease.get("result") or {}).get("nodes", []):
        for s in node.get("slices", []):
            if s.get("mdev_uuids"):
                print(
                    f"     mdev {', '.join(s['mdev_uuids'])} (simulated); kept: see it on {url}/ui/hosts/{host['hostname']}"
                )


def _print_ready(url: str, token: str, details: list[dict[str, object]], elapsed: float) -> None:
    table = Table("host", "pool", "GPUs", "models", "applied")
    for d in details:
        applied = d.get("applied") or {}
        table.add_row(
            str(d["hostname"]),
            str(d.get("pool") or ""),
            str(d["gpus"]),
            ", ".join(d.get("models") or []),  # type: ignore[arg-type]
            str(applied.get("message", "")) if isinstance(applied, dict) else "",
        )
    console.print(table)
    console.print(f"\n[bold]fleet ready[/] in {elapsed:.1f}s")
    console.print(f"  dashboard: {url}/ui   (sign in with the admin token below, or a tenant token)")
    console.print(f"  API:      {url}/v1   (OpenAPI: {url}/openapi.json, docs: {url}/docs)")
    console.print(f"  metrics:  {url}/metrics   health: {url}/healthz  {url}/readyz")
    console.print(f"  admin token: {token}")
    print("\nexample calls:")
    print(f"  export TOKEN={token}")
    print(f'  curl -s -H "Authorization: Bearer $TOKEN" {url}/v1/hosts')
    print(f'  curl -s -H "Authorization: Bearer $TOKEN" "{url}/v1/devices?model=NVIDIA%20H100%2080GB%20HBM3"')
    print(f'  curl -s -H "Authorization: Bearer $TOKEN" {url}/v1/hosts/demo-a100-80gb-1')
    print(f'  curl -s -X POST -H "Authorization: Bearer $TOKEN" {url}/v1/hosts/demo-l4-1/drain')
    print(f'  curl -s -H "Authorization: Bearer $TOKEN" {url}/v1/audit')
