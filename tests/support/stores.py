"""The kinds of store conftest's ``store`` fixture builds.

Tests asking for ``store`` run on the first two; the state contract
(``tests/test_state_contract.py``) asks for all three with
``pytest.mark.parametrize("store", STORES, indirect=True)``. The cluster needs the
session's Redis Cluster, so it is marked like the other topology tests.
"""

from __future__ import annotations

import pytest

STORES = [
    "memory",
    "redis",
    pytest.param("cluster", marks=[pytest.mark.reliability, pytest.mark.topology]),
]
