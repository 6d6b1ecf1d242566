"""The Postgres the tests start (tests/pg.py): without its binaries a test skips naming the
apt package on a bare machine, and fails in CI, where .ci/run installs them (DESIGN §10)."""

from __future__ import annotations

import pytest

from tests import pg


def test_missing_binaries_skip_naming_the_package_outside_ci(monkeypatch):
    monkeypatch.setattr(pg, "binaries", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql"):
        pg.require()


def test_missing_binaries_fail_in_ci(monkeypatch):
    monkeypatch.setattr(pg, "binaries", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install postgresql"):
        pg.require()


def test_the_cluster_answers_with_its_password_only(postgres, pg_url):
    import psycopg

    with psycopg.connect(pg_url) as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg_url.replace(pg.PASSWORD, "wrong"), connect_timeout=5).close()
