"""`gpufabric admin token create|list|revoke`: works directly against the database.

This is how the first admin token is made (it runs where the database is); later tokens can be
made the same way or through ``POST /v1/tokens``.
"""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import select

from controller import audit
from controller.auth.tokens import Principal, Role, create_api_token, revoke_api_token
from controller.cli.common import ConfigOption, DatabaseOption, console, fail, settings_or_exit
from controller.store.db import Database
from controller.store.models import ApiToken
from controller.store.schema import SchemaError, require_current_schema

app = typer.Typer(help="Administration that works directly against the database.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (admin, tenant, agent-bootstrap).", no_args_is_help=True)
app.add_typer(token_app, name="token")


def _db(config: ConfigOption, database_url: DatabaseOption) -> Database:
    settings = settings_or_exit(config, database_url)
    db = Database(settings.database_url)
    try:
        require_current_schema(db.engine)
    except SchemaError as exc:
        raise fail(str(exc), 3) from None
    return db


def _cli_principal() -> Principal:
    user = os.environ.get("USER") or "unknown"
    return Principal(role=Role.admin, name=f"cli:{user}")


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option("--role", help="admin | tenant | agent-bootstrap")],
    tenant: Annotated[str | None, typer.Option("--tenant", help="Tenant (tenant role only)")] = None,
    name: Annotated[str, typer.Option("--name", help="A label to recognise the token by")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    config: ConfigOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Create a token and print its secret (once: only its hash is stored)."""
    try:
        role_enum = Role(role)
    except ValueError:
        raise fail(f"--role must be one of admin, tenant, agent-bootstrap (not {role!r})", 2) from None
    db = _db(config, database_url)
    principal = _cli_principal()
    try:
        with audit.mutation(db, principal, "token.create", name or role, {"role": role, "tenant": tenant}) as (
            session,
            info,
        ):
            row, secret = create_api_token(
                session, role=role_enum, name=name, tenant=tenant, created_by=principal.actor
            )
            info["key_id"] = row.key_id
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    if as_json:
        print(json.dumps({"key_id": row.key_id, "role": role, "tenant": tenant, "name": name, "token": secret}))
    else:
        console.print(f"key id: {row.key_id}   role: {role}" + (f"   tenant: {tenant}" if tenant else ""))
        print(secret)


@token_app.command("list")
def token_list(config: ConfigOption = None, database_url: DatabaseOption = None) -> None:
    """List tokens (never their secrets)."""
    db = _db(config, database_url)
    table = Table("key id", "role", "tenant", "name", "created", "revoked")
    with db.session() as session:
        for t in session.scalars(select(ApiToken).order_by(ApiToken.id)):
            table.add_row(
                t.key_id,
                t.role,
                t.tenant or "",
                t.name,
                t.created_at.isoformat(timespec="seconds"),
                t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else "",
            )
    console.print(table)


@token_app.command("revoke")
def token_revoke(
    key_id: Annotated[str, typer.Argument(help="The token's key id (see `token list`)")],
    config: ConfigOption = None,
    database_url: DatabaseOption = None,
) -> None:
    db = _db(config, database_url)
    with audit.mutation(db, _cli_principal(), "token.revoke", key_id) as (session, _):
        found = revoke_api_token(session, key_id)
    if not found:
        raise fail(f"no token with key id {key_id}")
    console.print(f"revoked {key_id}")
