"""Secrets: masked by value as well as by name wherever backend configs are returned, never logged, the EKS config
schema refuses unknown fields, the SQLite file is private, and a revoked API token stops working on every replica
within 1 s. On SQLite and PostgreSQL where a database is involved."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from controller.api.app import create_app
from controller.backends.eks.cluster import backend_config as eks_backend_config
from controller.observability.logs import JsonFormatter
from controller.settings import Settings
from controller.store.db import Database
from controller.store.models import ApiToken, AuditEntry, Backend
from controller.testing import ServerThread
from tests.support.controller import Controller, make_settings
from tests.support.helpers import assert_problem

KEYSTONE_PASSWORD = "hunter2-keystone"
AUTH_PASSWORD = "pw-secret-auth"
KUBE_TOKEN = "sa-token-0123456789"
KUBE_URL_PASSWORD = "k8s-url-pass"
# Nothing listens on port 9 (discard): the reconcile job fails at once, with the URL in the client's error.
AUTH_URL = f"http://admin:{KEYSTONE_PASSWORD}@127.0.0.1:9/v3"
REVOCATION_BOUND_S = 1.0
SECRETS = (KEYSTONE_PASSWORD, AUTH_PASSWORD, KUBE_TOKEN, KUBE_URL_PASSWORD)


def _ironic(**auth: Any) -> dict[str, Any]:
    return {
        "auth": {
            "method": "password",
            "auth_url": AUTH_URL,
            "username": "gpufabric",
            "password": AUTH_PASSWORD,
            "project_name": "gpu",
            **auth,
        },
        "controller_url": "http://controller.test:8080",
        # The auth password repeated in a field whose name says nothing: masked by value.
        "image_source": f"http://images.test/gpu.qcow2?sig={AUTH_PASSWORD}",
        "reconcile_interval_s": 3600,
    }


def _eks(**extra: Any) -> dict[str, Any]:
    return {
        "cluster": "train",
        "region": "us-east-1",
        "kube_api_url": f"https://sa:{KUBE_URL_PASSWORD}@k8s.test",
        "kube_token": KUBE_TOKEN,
        **extra,
    }


def _assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} shown in {text[:500]}"


def test_configs_are_masked_by_value_and_by_schema_wherever_returned(controller: Controller) -> None:
    """The reproduction: a password inside auth_url (http://user:pass@...) was returned in the clear."""
    with controller.admin() as api:
        made = api.post("/v1/backends", json={"name": "ironic-lab", "kind": "ironic", "config": _ironic()})
        assert made.status_code == 201, made.text
        eks = api.post("/v1/backends", json={"name": "eks-train", "kind": "eks", "config": _eks()})
        assert eks.status_code == 201, eks.text
        answers = [
            made,
            eks,
            api.get("/v1/backends"),
            api.get("/v1/backends/ironic-lab"),
            api.get("/v1/backends/eks-train"),
        ]
        for answer in answers:
            assert answer.status_code in (200, 201)
            _assert_no_secret(answer.text)
        ironic = api.get("/v1/backends/ironic-lab").json()["config"]
        assert ironic["auth"]["auth_url"] == "http://admin:***@127.0.0.1:9/v3"
        assert ironic["auth"]["password"] == "***"
        assert ironic["image_source"] == "http://images.test/gpu.qcow2?sig=***"
        shown = api.get("/v1/backends/eks-train").json()["config"]
        assert shown["kube_token"] == "***" and shown["kube_api_url"] == "https://sa:***@k8s.test"
        audit = api.get("/v1/audit", params={"limit": 1000}).text
    _assert_no_secret(audit)
    with controller.db.session() as session:  # stored as given: the controller needs them to connect
        stored = {b.name: b.config for b in session.scalars(select(Backend))}
    assert stored["ironic-lab"]["auth"]["auth_url"] == AUTH_URL
    assert stored["ironic-lab"]["auth"]["password"] == AUTH_PASSWORD
    assert stored["eks-train"]["kube_token"] == KUBE_TOKEN


def test_the_eks_config_refuses_unknown_fields(controller: Controller) -> None:
    """The reproduction: the EKS backend accepted arbitrary extra fields and returned them unmasked."""
    nodegroup = {
        "name": "l4",
        "managed": True,
        "instance_types": ["g6.12xlarge"],
        "min": 0,
        "max": 2,
        "desired": 1,
        "efa": False,
        "gpus_per_node": 4,
        "gpu_model": "L4",
    }
    bad = [
        _eks(aws_secret_key="AKIA-not-a-field"),
        _eks(Kube_Token="case matters"),
        _eks(nodegroups=[{**nodegroup, "ssh_private_key": "-----BEGIN"}]),
    ]
    with controller.admin() as api:
        for config in bad:
            response = api.post("/v1/backends", json={"name": "eks-x", "kind": "eks", "config": config})
            body = assert_problem(response, 422, "validation-error")
            assert "AKIA" not in response.text and "BEGIN" not in response.text
            assert "eks config" in body["detail"]
        good = api.post("/v1/backends", json={"name": "eks-x", "kind": "eks", "config": _eks(nodegroups=[nodegroup])})
        assert good.status_code == 201, good.text
    with controller.db.session() as session:
        assert session.scalar(select(func.count()).select_from(Backend)) == 1
        failed = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "backend.create", AuditEntry.result == "failed")
        ).all()
        assert len(failed) == len(bad)


def test_an_eks_row_stored_before_the_schema_still_loads_and_shows_only_known_fields(controller: Controller) -> None:
    legacy = {**_eks(), "old_field": f"http://u:{KUBE_URL_PASSWORD}@x"}
    with controller.db.session() as session:
        session.add(Backend(name="eks-old", kind="eks", config=legacy))
    assert eks_backend_config(legacy).cluster == "train"  # what sync, checks and leases load
    with controller.admin() as api:
        shown = api.get("/v1/backends/eks-old")
    assert shown.status_code == 200 and "old_field" not in shown.json()["config"]
    _assert_no_secret(shown.text)


def test_the_reconcile_job_never_logs_the_auth_url_password(
    controller: Controller, caplog: pytest.LogCaptureFixture
) -> None:
    """The reproduction: the OpenStack reconcile job logged auth_url with its password (the client library's
    connection error repeats the URL; so does its own warning)."""
    with controller.admin() as api:
        made = api.post("/v1/backends", json={"name": "ironic-lab", "kind": "ironic", "config": _ironic()})
        assert made.status_code == 201, made.text
    job = controller.server.app.state.hooks.hooks["backend-sync:ironic"]
    from controller.jobs.hooks import JobContext

    with caplog.at_level(logging.DEBUG):
        job.run(JobContext(db=controller.db, settings=controller.settings))
    failures = [r for r in caplog.records if r.name == "gpufabric.backends.openstack"]
    assert failures, "the job logged nothing about the unreachable cloud"
    assert any("admin:***@127.0.0.1:9" in (r.getMessage() + (r.exc_text or "")) for r in caplog.records)
    _assert_no_secret(caplog.text)
    formatter = JsonFormatter()
    for record in caplog.records:
        _assert_no_secret(record.getMessage())
        _assert_no_secret(formatter.format(record))


def test_token_secrets_are_masked_in_logs(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    create_app(make_settings(f"sqlite:///{tmp_path / 'c.db'}", tmp_path), db=_migrated(tmp_path / "c.db"))
    secret = "gft_0123456789ab_" + "S" * 43
    with caplog.at_level(logging.INFO):
        logging.getLogger("gpufabric.test").info("calling with %s", secret)
        try:
            raise RuntimeError(f"refused {secret} at https://bob:{KEYSTONE_PASSWORD}@api.test/")
        except RuntimeError:
            logging.getLogger("some.library").exception("failed")
    assert "S" * 43 not in caplog.text and KEYSTONE_PASSWORD not in caplog.text
    assert "gft_0123456789ab_***" in caplog.text and "https://bob:***@api.test/" in caplog.text


def _migrated(path: Path) -> Database:
    from controller.store.schema import upgrade

    db = Database(f"sqlite:///{path}", pool_size=2)
    upgrade(db.engine)
    return db


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_sqlite_file_is_created_private(tmp_path: Path) -> None:
    """The reproduction: the SQLite database file was created world-readable (0644 under the usual umask)."""
    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "data" / "controller.db"
        db = _migrated(path)
        with db.session() as session:
            session.add(ApiToken(key_id="k", secret_sha256="0" * 64, role="admin"))
        assert _mode(path) == 0o600
        assert _mode(path.parent) == 0o700
        wal = path.with_name(path.name + "-wal")
        assert wal.exists() and _mode(wal) == 0o600
        db.dispose()
        # A file made world-readable before (an older version, a copy) is tightened when the controller opens it.
        os.chmod(path, 0o644)
        again = Database(f"sqlite:///{path}", pool_size=2)
        assert _mode(path) == 0o600
        again.dispose()
    finally:
        os.umask(old_umask)


def test_the_auth_cache_ttl_cannot_exceed_one_second(tmp_path: Path) -> None:
    assert Settings.model_validate({"data_dir": tmp_path}).auth_cache_ttl_s <= 1.0
    with pytest.raises(ValidationError, match="auth_cache_ttl_s"):
        Settings.model_validate({"data_dir": tmp_path, "auth_cache_ttl_s": 60})


def test_a_revoked_token_stops_working_on_every_replica_within_one_second(
    controller: Controller, database_url: str, tmp_path: Path
) -> None:
    """Two apps on one database; the token is revoked by another process (the CLI), which no cache in this process
    hears of: both replicas refuse it once their cached lookup is older than auth_cache_ttl_s (<= 1 s)."""
    settings_b = make_settings(database_url, tmp_path / "b")
    db_b = Database(database_url, pool_size=2)
    replica_b = ServerThread(create_app(settings_b, db=db_b)).start()
    try:
        with controller.admin() as api:
            made = api.post("/v1/tokens", json={"role": "tenant", "tenant": "acme", "name": "doomed"}).json()
        token, key_id = made["token"], made["key_id"]
        urls = [controller.url, replica_b.url]
        for url in urls:  # both replicas cache the lookup
            assert httpx.get(url + "/v1/whoami", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        gpufabric = str(Path(sys.executable).with_name("gpufabric"))
        revoked = subprocess.run(
            [gpufabric, "admin", "token", "revoke", key_id, "--database-url", database_url],
            capture_output=True,
            text=True,
            env={**os.environ, "GPUFABRIC_DATA_DIR": str(tmp_path / "cli")},
        )
        assert revoked.returncode == 0, revoked.stderr
        time.sleep(REVOCATION_BOUND_S)  # the promise: refused everywhere within 1 s of the revocation
        for url in urls:
            refused = httpx.get(url + "/v1/whoami", headers={"Authorization": f"Bearer {token}"})
            assert_problem(refused, 401, "unauthorized")
    finally:
        replica_b.stop()
        db_b.dispose()
    assert json.dumps(made)  # the token was issued through the API (shown once)


def test_reconcile_against_an_unreachable_keystone_is_a_report_not_a_500(controller: Controller) -> None:
    """keystoneauth's own errors (connection refused at Keystone) were not wrapped by the OpenStack driver: the
    reconcile route answered 500. Now it answers the report, with the error (password masked)."""
    with controller.admin() as api:
        assert api.post("/v1/backends", json={"name": "ironic-lab", "kind": "ironic", "config": _ironic()}).is_success
        response = api.post("/v1/backends/ironic-lab/reconcile")
        assert response.status_code == 200, response.text
        report = response.json()
    assert report["errors"] and any("127.0.0.1:9" in e for e in report["errors"]), report
    _assert_no_secret(response.text)
