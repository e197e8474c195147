"""The tests of test_files_e2e.py across the nodes of a cluster (cluster_world.py):
sender and recipients on different nodes, chunks relayed from node to node under the
transfer's flow control, bytes compared."""

from __future__ import annotations

import pytest
import pytest_asyncio
from cluster_world import ClusterChat, only_chat_tests
from test_files_e2e import *  # noqa: F403 (the tests themselves, collected here again)

pytestmark = pytest.mark.cluster
only_chat_tests(globals())


@pytest_asyncio.fixture
async def chat(cluster: ClusterChat) -> ClusterChat:
    return cluster
