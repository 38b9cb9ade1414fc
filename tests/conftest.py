import contextlib
import os
import uuid

import pytest
from hypothesis import settings

# CI explores the same examples every run, so a red build is reproducible; run
# locally with HYPOTHESIS_PROFILE=explore to search new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

from qis_lib.infra.servers import free_port  # noqa: E402
from qis_lib.bench.modes import ServerPool  # noqa: E402


@pytest.fixture(scope="session")
def server_pool(tmp_path_factory):
    """Servers the store modes share for the whole session (one `chroma run`, started on
    first use); tests use their own collections."""
    with contextlib.ExitStack() as stack:
        yield ServerPool(tmp_path_factory.mktemp("servers"), stack)


@pytest.fixture(scope="session")
def chroma_server(server_pool):
    """The session's `chroma run` process (the one the chroma-server mode uses)."""
    return server_pool.get("chroma-server")


@pytest.fixture
def dead_url():
    """A loopback url where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def qdrant_url():
    return os.environ.get("QDRANT_URL")
