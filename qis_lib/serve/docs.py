"""The service's docs page (/docs, Swagger UI) with every asset served by the service itself.

FastAPI's default page loads Swagger UI's script and stylesheet from a public CDN, so on a
machine without network it renders blank. Here they come from the pinned package
swagger-ui-bundle (Swagger UI 4.15.5's dist files), mounted at /docs/assets: the page
needs nothing but the service. /docs and /openapi.json hold no data, so they stay open
when the service requires an API key (as /health does).
"""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

PAGE = "/docs"
ASSETS = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    """Serve Swagger UI for `app`'s OpenAPI document at /docs, its assets from swagger-ui-bundle.
    `app` must have been made with docs_url=None (and redoc_url=None: ReDoc has no offline
    bundle here)."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get(PAGE, include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")  # behind a proxy that serves the app under a prefix
        return get_swagger_ui_html(openapi_url=root + app.openapi_url, title=f"{app.title} - docs",
                                   swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{ASSETS}/favicon-32x32.png")
