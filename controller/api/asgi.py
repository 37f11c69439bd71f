"""The app as uvicorn's worker processes build it (``gpufabric controller serve --workers N``).

The parent resolves the settings once (flags, environment, config file) and hands them to its workers in
``WORKER_SETTINGS_ENV`` as JSON; each worker builds its own app, connection pool, caches and change-feed
poller. Each gets its own ``instance_id`` so the scheduler's leader election (``controller.jobs.leader``) lets
exactly one worker of all replicas run the jobs.
"""

from __future__ import annotations

import json
import os

from fastapi import FastAPI

from controller.settings import Settings

WORKER_SETTINGS_ENV = "_GPUFABRIC_WORKER_SETTINGS"


def worker_settings_json(settings: Settings, *, instance_id_given: bool) -> str:
    data = settings.model_dump(mode="json")
    if instance_id_given:
        data["_instance_prefix"] = data["instance_id"]
    data.pop("instance_id")
    return json.dumps(data)


def create_worker_app() -> FastAPI:
    from controller.api.app import create_app
    from controller.observability.logs import configure_logging

    raw = os.environ.get(WORKER_SETTINGS_ENV)
    if not raw:
        raise RuntimeError(f"{WORKER_SETTINGS_ENV} is not set: start workers with `gpufabric controller serve`")
    data = json.loads(raw)
    prefix = data.pop("_instance_prefix", None)
    if prefix:
        data["instance_id"] = f"{prefix}-w{os.getpid()}"
    settings = Settings.model_validate(data)
    configure_logging(settings.log_level, json_logs=settings.log_json)
    return create_app(settings)
