"""``/docs``, the API's documentation, works offline: Swagger UI's page loads only files the server serves itself
(``static/vendor/swagger-ui``), and a real Chromium that can reach no other host draws the API from them."""

from __future__ import annotations

import re

import httpx

from tests.lm_fixture import lm_atlas, lm_server  # noqa: F401 (fixtures)

SWAGGER_UI = "/static/vendor/swagger-ui/"


def test_docs_page_loads_only_files_the_server_serves(lm_server: str):
    with httpx.Client(base_url=lm_server, timeout=30) as client:
        docs = client.get("/docs")
        assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
        assert "//" not in docs.text  # no URL of another host (FastAPI's default page loads from a CDN)
        assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
        assert sorted(assets) == [f"{SWAGGER_UI}{name}" for name in ("favicon-32x32.png", "swagger-ui-bundle.js",
                                                                      "swagger-ui.css")]
        for asset in assets:
            served = client.get(asset)
            assert served.status_code == 200 and len(served.content) > 0, asset
        assert "url: '/openapi.json'" in docs.text and client.get("/openapi.json").status_code == 200
        assert client.get("/redoc").status_code == 404  # FastAPI's ReDoc page would load from CDNs too: turned off


def test_docs_draws_the_api_with_no_other_host_reachable(page, lm_server: str):
    elsewhere = []

    def local_only(route):
        if route.request.url.startswith(lm_server):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", local_only)
    try:
        page.goto(lm_server + "/docs", wait_until="load")
        title = page.locator(".swagger-ui .info .title")
        title.wait_for()
        assert title.inner_text().startswith("atlascope")
        page.locator(".swagger-ui .opblock").first.wait_for()  # the operations, read from /openapi.json
        assert elsewhere == []
    finally:
        page.unroute("**/*")
