"""The state API contract suite (tests/test_state_contract.py) on a real Redis Cluster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_state_contract import *

from flask_asyncstate.stores.base import Store
from flask_asyncstate.stores.redis import RedisStore

pytestmark = [pytest.mark.reliability, pytest.mark.topology]


@pytest.fixture
def store(cluster: Any) -> Iterator[Store]:
    client = cluster.client()
    client.flushall()
    found = RedisStore(client, key_prefix="contract:", sweep_interval=0.2)
    yield found
    found.close()
    client.close()
