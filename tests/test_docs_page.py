"""The service's /docs page renders with no network: its assets come from the service itself.

A headless Chromium (Debian's `chromium`, installed by `make test`'s `browser` step) opens
/docs of a live service on a loopback port, every host name but the loopback address made
unresolvable, and every operation of the OpenAPI document must be in the rendered page.
"""
import shutil
import subprocess
from html.parser import HTMLParser

import httpx
import pytest
from fastapi.testclient import TestClient

from qis_lib.embedders import HashEmbedder
from qis_lib.serve.app import create_app
from qis_lib.serve.namespaces import Namespaces
from qis_lib.serve.process import RoutingService

KEY = "docs-key"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
CHROMIUM = shutil.which("chromium")


def operations(document: dict) -> set[tuple[str, str, str]]:
    """(METHOD, path, operationId) of every operation in an OpenAPI document."""
    return {(method.upper(), path, op["operationId"]) for path, item in document["paths"].items()
            for method, op in item.items() if method in METHODS}


class RenderedOperations(HTMLParser):
    """The operations Swagger UI rendered: each `div.opblock` (id "operations-TAG-OPERATIONID")
    with the method and the path shown in its summary line."""

    def __init__(self):
        super().__init__()
        self.found: list[dict] = []
        self._in_method = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "div" and "opblock" in classes and (attrs.get("id") or "").startswith("operations-"):
            self.found.append({"id": attrs["id"], "method": "", "path": None})
        elif self.found and "opblock-summary-method" in classes:
            self._in_method = True
        elif self.found and attrs.get("data-path") is not None and self.found[-1]["path"] is None:
            self.found[-1]["path"] = attrs["data-path"]

    def handle_data(self, data):
        if self._in_method:
            self.found[-1]["method"] += data.strip()

    def handle_endtag(self, tag):
        self._in_method = False


def rendered(dom: str) -> set[tuple[str, str, str]]:
    """(METHOD, path, element id) of each operation in the rendered page."""
    parser = RenderedOperations()
    parser.feed(dom)
    return {(op["method"], op["path"], op["id"]) for op in parser.found}


def dump_dom(url: str, profile) -> str:
    """The page at `url` after Chromium rendered it (its scripts run, within a virtual time budget)."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}",
               # no network: every host name fails to resolve, so a CDN asset could not load
               "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
               "--virtual-time-budget=30000", "--dump-dom", url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with RoutingService("memory://", embedder="hash", api_key=KEY, folder=tmp_path_factory.mktemp("docs")) as svc:
        yield svc


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: `make test` installs it where apt-get runs as root "
                                             "(apt-get install -y chromium)")
def test_every_operation_is_rendered_offline(service, tmp_path):
    document = httpx.get(f"{service.url}/openapi.json", timeout=10).json()
    wanted = operations(document)
    assert ("POST", "/v1/query", "query_v1_query_post") in wanted
    dom = dump_dom(f"{service.url}/docs", tmp_path / "profile")
    from swagger_ui_bundle import swagger_ui_path

    assert "Unable to render this definition" not in dom, \
        (f"{swagger_ui_path.name} cannot read OpenAPI {document['openapi']}: requirements.txt's swagger-ui-bundle-v2 "
         "ships Swagger UI 5 (pip uninstall swagger-ui-bundle first: the same import name)")
    shown = rendered(dom)
    assert {(method, path) for method, path, _ in shown} == {(method, path) for method, path, _ in wanted}
    for method, path, operation_id in wanted:  # Swagger UI's id: "operations-" + tag + "-" + operationId
        assert any(m == method and p == path and i.endswith(f"-{operation_id}") for m, p, i in shown), operation_id
    assert len(shown) == len(wanted)


def test_docs_and_the_document_need_no_key_and_no_other_host(service):
    page = httpx.get(f"{service.url}/docs", timeout=10)
    assert page.status_code == 200
    assert httpx.get(f"{service.url}/openapi.json", timeout=10).status_code == 200
    assert httpx.get(f"{service.url}/v1/stats", timeout=10).status_code == 401  # the data is still guarded
    parser = Links()
    parser.feed(page.text)
    assert parser.links and all(link.startswith("/") for link in parser.links), parser.links
    for link in parser.links:  # each asset is served, without the key
        assert httpx.get(f"{service.url}{link}", timeout=10).status_code == 200, link


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [value for name, value in attrs if name in ("src", "href")]


def test_the_document_lists_no_docs_route_and_redoc_is_gone():
    with TestClient(create_app(Namespaces("memory://", HashEmbedder(), limit=2))) as client:
        paths = client.get("/openapi.json").json()["paths"]
        assert not [p for p in paths if p.startswith("/docs") or p.startswith("/redoc")]
        assert client.get("/redoc").status_code == 404
        assert "swagger-ui-bundle.js" in client.get("/docs").text
