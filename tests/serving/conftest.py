"""Doubles of the model APIs, one server per test module, reset for every test."""

from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from tests.doubles import ANTHROPIC_KEY, OPENAI_KEY, Behaviour, anthropic_double, openai_double, run_double


@pytest.fixture(scope="module")
def openai_server() -> Iterator[tuple[FastAPI, str]]:
    app = openai_double.make_app()
    with run_double(app) as url:
        yield app, url


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[tuple[FastAPI, str]]:
    app = anthropic_double.make_app()
    with run_double(app) as url:
        yield app, url


@pytest.fixture
def openai_api(openai_server, monkeypatch) -> FastAPI:
    """The OpenAI double, with default behaviour and no requests yet; the SDK's variables point at it."""
    app, url = openai_server
    app.state.behaviour = Behaviour()
    app.state.requests.clear()
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", url + "/v1")
    return app


@pytest.fixture
def anthropic_api(anthropic_server, monkeypatch) -> FastAPI:
    """The Anthropic double, with default behaviour and no requests yet; the SDK's variables point at it."""
    app, url = anthropic_server
    app.state.behaviour = Behaviour()
    app.state.requests.clear()
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
    return app
