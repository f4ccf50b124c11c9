"""Pytest plugin: a real Azurite blob emulator for the Azure side of the storage tests.

One Azurite per session (node takes ~1-2 s to start); tests that stop it (outage tests)
use `azurite.stop()` / `azurite.start()`, which reuse the same port and data directory,
and the function-scoped `azurite` fixture brings it back up for the next test.
A missing Azurite is an error, never a skip: the Azure backend must be tested.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.storage.azurite import Azurite, AzuriteNotFound, find_azurite

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def azurite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    try:
        binary = find_azurite(PROJECT_ROOT)
    except AzuriteNotFound as exc:
        pytest.fail(str(exc), pytrace=False)
    server = Azurite(tmp_path_factory.mktemp("azurite"), binary=binary)
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        pytest.fail(f"Azurite failed to start ({exc}); run `make install` if it is missing", pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def azurite(azurite_server: Azurite) -> Azurite:
    """The session's Azurite, running (restarted on the same port if a test stopped it)."""
    azurite_server.start()
    return azurite_server


@pytest.fixture
def azurite_env(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """AZURE_STORAGE_CONNECTION_STRING pointing at Azurite, set in os.environ for the test."""
    for name in ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY", "AZURE_STORAGE_BLOB_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in azurite.env.items():
        monkeypatch.setenv(name, value)
    return azurite.env
