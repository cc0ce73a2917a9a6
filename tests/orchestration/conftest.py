import shutil
from pathlib import Path

import pytest

from chatmeter.settings import Settings
from orchestration.run import ensure_manifest, run_pipeline
from tests.orchestration.factories import AS_OF, make_settings, seed

# `dbt parse` once per session, when this conftest loads: before the test modules, which import the dbt
# assets (defined from the manifest), are collected.
ensure_manifest(force=True)


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> tuple[Settings, dict]:
    """One full pipeline run over the synthetic data, shared by the tests that only read its output."""
    settings = make_settings(tmp_path_factory.mktemp("built"))
    info = seed(settings)
    assert run_pipeline(settings, as_of=AS_OF)
    return settings, info


@pytest.fixture
def built_copy(built, tmp_path) -> tuple[Settings, dict]:
    """A private copy of the built data dir (warehouse included), for tests that write."""
    settings, info = built
    target = tmp_path / "data"
    shutil.copytree(settings.data_dir, target)
    return Settings(data_dir=target), info


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)
