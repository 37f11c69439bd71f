"""`gpufabric controller serve | db upgrade | db current`."""

from __future__ import annotations

from typing import Annotated

import typer

from controller.cli.common import ConfigOption, DatabaseOption, console, fail, settings_or_exit
from controller.store.db import Database
from controller.store.schema import SchemaError, require_current_schema, schema_status, upgrade

WORKER_HEALTHCHECK_TIMEOUT_S = 120

app = typer.Typer(help="Run and manage the controller service.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@app.command()
def serve(
    config: ConfigOption = None,
    database_url: DatabaseOption = None,
    host: Annotated[str | None, typer.Option("--host", help="Bind address")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Bind port")] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            envvar="GPUFABRIC_WORKERS",
            help="Worker processes sharing the port (one per core; see docs/operations.md for sizing). The job "
            "scheduler still runs in one of them, chosen by leader election.",
        ),
    ] = 1,
    upgrade_schema: Annotated[
        bool, typer.Option("--upgrade", help="Run `db upgrade` before serving (single-replica set-ups)")
    ] = False,
) -> None:
    """Serve the REST API (uvicorn with uvloop and httptools). Refuses to start unless the schema is current."""
    import os

    import uvicorn

    from controller.api.app import create_app
    from controller.api.asgi import WORKER_SETTINGS_ENV, worker_settings_json
    from controller.auth.external import ExternalIdentity
    from controller.observability.logs import configure_logging

    settings = settings_or_exit(config, database_url, bind_host=host, bind_port=port)
    configure_logging(settings.log_level, json_logs=settings.log_json)
    try:
        ExternalIdentity.from_settings(settings)  # the workers build it again; refuse a bad setup here, once
    except ValueError as exc:
        raise fail(f"identity settings: {exc}", 2) from None
    db = Database(settings.database_url, pool_size=settings.db_pool_size, change_poll_s=settings.change_poll_s)
    if upgrade_schema:
        upgrade(db.engine)
    try:
        require_current_schema(db.engine)  # the workers check again; refuse here with the reason, once
    except SchemaError as exc:
        db.dispose()
        raise fail(str(exc), 3) from None
    common: dict[str, object] = {
        "host": settings.bind_host,
        "port": settings.bind_port,
        "log_config": None,
        "access_log": False,
        "timeout_keep_alive": settings.keep_alive_s,
    }
    if workers > 1:
        db.dispose()
        given = "GPUFABRIC_INSTANCE_ID" in os.environ
        os.environ[WORKER_SETTINGS_ENV] = worker_settings_json(settings, instance_id_given=given)
        # A worker builds its placement index from the store before it serves (seconds at 100,000 hosts): give
        # the supervisor's health check that long before it declares the worker hung and replaces it.
        uvicorn.run(
            "controller.api.asgi:create_worker_app",
            factory=True,
            workers=workers,
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_TIMEOUT_S,
            **common,  # type: ignore[arg-type]
        )
        return
    try:
        application = create_app(settings, db=db)
    except SchemaError as exc:
        raise fail(str(exc), 3) from None
    uvicorn.run(application, **common)  # type: ignore[arg-type]


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None, database_url: DatabaseOption = None) -> None:
    """Create or migrate the schema to this version's head."""
    settings = settings_or_exit(config, database_url)
    db = Database(settings.database_url)
    before = schema_status(db.engine)
    if not before.known:
        raise fail(f"schema revision {before.current} is newer than this gpufabric (head {before.head})", 3)
    upgrade(db.engine)
    after = schema_status(db.engine)
    console.print(f"schema {before.current or '(empty)'} -> {after.current} ({db.engine.url.render_as_string()})")


@db_app.command("current")
def db_current(config: ConfigOption = None, database_url: DatabaseOption = None) -> None:
    """Show the schema revision and whether this controller can run on it."""
    settings = settings_or_exit(config, database_url)
    status = schema_status(Database(settings.database_url).engine)
    state = "current" if status.ok else ("unknown (newer)" if not status.known else "behind")
    console.print(f"revision: {status.current or '(none)'}  head: {status.head}  {state}")
    if not status.ok:
        raise typer.Exit(1)
