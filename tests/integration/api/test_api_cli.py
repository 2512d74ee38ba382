"""The cronbeat CLI: api-key create/revoke and openapi."""

from __future__ import annotations

import hashlib

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.openapi import spec_text
from app.models import ApiKey
from cli.main import main
from tests.integration.api.conftest import Caller, assert_error


@pytest.fixture(autouse=True)
def _services_in_the_environment(test_services: object) -> None:
    """The CLI reads DATABASE_URL and REDIS_URL: the test services put them in the
    environment (each test replaces what it tries), whichever test runs first."""


def _key_count(db: sessionmaker[Session]) -> int:
    with db.begin() as session:
        return session.scalar(select(func.count()).select_from(ApiKey))


def test_create_prints_the_key_once_and_it_authenticates(
    client: FlaskClient, db: sessionmaker[Session], capsys: pytest.CaptureFixture[str],
):
    assert main(["api-key", "create", "--tenant", "acme", "--name", "laptop"]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("cb_") and len(key) == 46
    assert key not in err and "laptop" in err
    with db.begin() as session:
        assert session.scalars(select(ApiKey.key_hash)).one() == hashlib.sha256(
            key.encode()).hexdigest()
    assert Caller(client, key).get("/triggers").status_code == 200

    assert main(["api-key", "revoke", "--tenant", "acme", "--name", "laptop"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and key not in err
    assert_error(Caller(client, key).get("/triggers"), 401)


def test_conflicts_and_unknown_keys_exit_1_with_a_message(
    db: sessionmaker[Session], capsys: pytest.CaptureFixture[str],
):
    assert main(["api-key", "create", "--tenant", "acme", "--name", "ci"]) == 0
    capsys.readouterr()
    assert main(["api-key", "create", "--tenant", "acme", "--name", "ci"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["api-key", "revoke", "--tenant", "acme", "--name", "nope"]) == 1
    assert "no active API key" in capsys.readouterr().err
    assert _key_count(db) == 1


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["api-key"],
        ["api-key", "create", "--tenant", "acme"],
        ["api-key", "create", "--tenant", "bad tenant", "--name", "x"],
        ["api-key", "create", "--tenant", "acme", "--name", "x" * 201],
        ["api-key", "revoke", "--name", "x"],
        ["api-key", "rotate", "--tenant", "acme", "--name", "x"],
    ],
)
def test_bad_usage_exits_2_on_stderr_and_writes_nothing(
    db: sessionmaker[Session], capsys: pytest.CaptureFixture[str], argv: list[str],
):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err
    assert _key_count(db) == 0


def test_a_missing_database_url_exits_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
):
    monkeypatch.delenv("DATABASE_URL")
    assert main(["api-key", "create", "--tenant", "acme", "--name", "x"]) == 2
    assert "DATABASE_URL" in capsys.readouterr().err


def test_an_unreachable_database_exits_1_without_the_drivers_words(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
):
    monkeypatch.setenv("DATABASE_URL", "postgresql://someone:s3cr3t@127.0.0.1:9/x")
    assert main(["api-key", "create", "--tenant", "acme", "--name", "x"]) == 1
    err = capsys.readouterr().err
    assert "s3cr3t" not in err and "OperationalError" in err


def test_openapi_prints_the_document(capsys: pytest.CaptureFixture[str]):
    assert main(["openapi"]) == 0
    assert capsys.readouterr().out == spec_text()


def test_an_unreachable_database_names_the_variable_and_the_make_run_env_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("DATABASE_URL", f"postgresql://nobody:s3cret@127.0.0.1:{port}/x")
    assert main(["api-key", "create", "--tenant", "t1", "--name", "k"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("cronbeat: the database at DATABASE_URL failed (OperationalError); is it "
                   "running and reachable? For the servers `make run` started, run "
                   "`source .cronbeat/env` first.\n")
    monkeypatch.delenv("DATABASE_URL")
    assert main(["api-key", "create", "--tenant", "t1", "--name", "k"]) == 2
    assert capsys.readouterr().err == (
        "cronbeat: DATABASE_URL is not set (for the servers `make run` started, run "
        "`source .cronbeat/env` first)\n")
