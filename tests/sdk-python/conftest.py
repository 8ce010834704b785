"""Shared fixtures for the Python SDK tests.

tests/sdk_python.rs starts subscriberd and runs these files with
SUBSCRIBERD_URL (http://host:port, no path) and SUBSCRIBERD_KEY set.
"""

import os
import re
import uuid

import pytest


@pytest.fixture(scope="session")
def url() -> str:
    value = os.environ.get("SUBSCRIBERD_URL")
    assert value, "SUBSCRIBERD_URL must be set (tests/sdk_python.rs sets it)"
    return value.rstrip("/")


@pytest.fixture(scope="session")
def key() -> str:
    value = os.environ.get("SUBSCRIBERD_KEY")
    assert value, "SUBSCRIBERD_KEY must be set (tests/sdk_python.rs sets it)"
    return value


@pytest.fixture
def subscriber_id(request) -> str:
    """A subscriber id of this test alone."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return f"py-{name}-{uuid.uuid4().hex[:8]}"
