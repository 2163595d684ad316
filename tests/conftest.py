"""Shared test fixtures: the real artifacts in ../shared/data, and one CPU device.

Tests that need ../shared/data skip with the reason when it is absent; nothing here is mocked.
"""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


def shared_path(*parts: str) -> str:
    """Path under ../shared/data; skips the calling test (saying why) when it is missing."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"reference data {path} is absent (../shared/data is not beside the repo)")
    return path


@pytest.fixture
def shared_data():
    return shared_path
