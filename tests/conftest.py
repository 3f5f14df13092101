"""Fixtures shared by the tests."""

from __future__ import annotations

import pytest

from helpers import API_KEY, FakeTime
from memori_nb.testing import AugmentationServer

pytest_plugins = ["memori_sdk"]


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def server():
    with AugmentationServer(api_key=API_KEY) as running:
        yield running
