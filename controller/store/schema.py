"""Alembic migrations run programmatically from the package, and the schema-revision check."""

from __future__ import annotations

from dataclasses import dataclass

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine


class SchemaError(RuntimeError):
    """The database schema is not one this controller can run on."""


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", "controller.store:migrations")
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    script = ScriptDirectory.from_config(_script_config())
    head = script.get_current_head()
    assert head is not None
    return head


def _script_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "controller.store:migrations")
    return config


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(alembic_config(engine), revision)


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str
    known: bool

    @property
    def ok(self) -> bool:
        return self.current == self.head


def schema_status(engine: Engine) -> SchemaStatus:
    script = ScriptDirectory.from_config(_script_config())
    current = current_revision(engine)
    known = current is None or _known(script, current)
    return SchemaStatus(current=current, head=head_revision(), known=known)


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except Exception:
        return False


def require_current_schema(engine: Engine) -> None:
    """Raise :class:`SchemaError` with what to do unless the schema is exactly this code's head."""
    status = schema_status(engine)
    url = engine.url.render_as_string(hide_password=True)
    if status.current is None:
        raise SchemaError(f"the database at {url} has no gpufabric schema; run `gpufabric controller db upgrade` first")
    if not status.known:
        raise SchemaError(
            f"the database at {url} is at schema revision {status.current}, which this controller "
            f"(head {status.head}) does not know: it was migrated by a newer gpufabric. "
            "Run the newer controller, or restore a backup made before that upgrade."
        )
    if not status.ok:
        raise SchemaError(
            f"the database at {url} is at schema revision {status.current}, behind this controller's "
            f"{status.head}; run `gpufabric controller db upgrade`"
        )
