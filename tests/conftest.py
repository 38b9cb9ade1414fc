import os
import uuid

import pytest
from hypothesis import settings

# CI explores the same examples every run, so a red build is reproducible; run
# locally with HYPOTHESIS_PROFILE=explore to search new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

from qis_lib.servers import ChromaServer, free_port


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """One `chroma run` process for the whole session; tests use their own collections."""
    server = ChromaServer(path=tmp_path_factory.mktemp("chroma-server"))
    server.start()
    yield server
    server.close()


@pytest.fixture
def dead_url():
    """A loopback url where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def qdrant_url():
    return os.environ.get("QDRANT_URL")
