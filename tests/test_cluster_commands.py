"""Every command of README "Commands" across the nodes of a cluster: the tests of
test_e2e_commands.py, run with each client on the next of three nodes (cluster_world.py)
on a real Redis and PostgreSQL. The same exact lines must come out as on one server."""

from __future__ import annotations

import pytest
import pytest_asyncio
from cluster_world import ClusterChat, only_chat_tests
from test_e2e_commands import *  # noqa: F403 (the tests themselves, collected here again)

pytestmark = pytest.mark.cluster
only_chat_tests(globals())


@pytest_asyncio.fixture
async def chat(cluster: ClusterChat) -> ClusterChat:
    return cluster
