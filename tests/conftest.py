"""Shared fixtures: every test gets its own data dir; the app runs in-process with the simulated provider."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from chatmeter.settings import Settings

ADMIN = "test-admin-token"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        admin_token=ADMIN,
        wal_roll_age_s=0.2,
        reload_interval_s=0.05,
        auth_cache_ttl_s=0.0,
        _env_file=None,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    from serving.app import create_app

    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


class Tenants:
    """A factory: `tenants.create("free")` makes a tenant through the admin API."""

    def __init__(self, client: TestClient):
        self.client = client

    def create(self, plan: str = "free", name: str = "Acme", **extra) -> dict:
        r = self.client.post(
            "/admin/tenants", json={"name": name, "plan": plan, **extra}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert r.status_code == 201, r.text
        body = r.json()
        body["headers"] = {"Authorization": f"Bearer {body['api_key']}"}
        return body


@pytest.fixture
def tenants(client: TestClient) -> Tenants:
    return Tenants(client)


def wait_for(predicate, timeout: float = 15.0) -> bool:
    """Poll `predicate` until it holds; bounded, and never part of an assertion about speed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def chat_body(content: str = "hello there", max_tokens: int = 50, **extra) -> dict:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        **extra,
    }
