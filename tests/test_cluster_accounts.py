"""The tests of test_e2e_accounts.py across the nodes of a cluster (cluster_world.py): each
client on the next of three nodes, on a real Redis and PostgreSQL."""

from __future__ import annotations

import pytest
import pytest_asyncio
from cluster_world import ClusterChat, only_chat_tests
from test_e2e_accounts import *  # noqa: F403 (the tests themselves, collected here again)

pytestmark = pytest.mark.cluster
only_chat_tests(globals())


@pytest_asyncio.fixture
async def chat(cluster: ClusterChat) -> ClusterChat:
    return cluster
