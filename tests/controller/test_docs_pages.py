"""/docs (Swagger UI) and /redoc load only from the controller itself, so they render on a machine offline."""

from __future__ import annotations

import re

import pytest

from tests.support.controller import Controller

# Where a page loads from: attributes, and the OpenAPI document Swagger UI's script fetches.
REFERENCE = re.compile(r"""(?:src|href|spec-url)="([^"]*)"|\burl: '([^']*)'""")
CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
    ".json": ("application/json",),
}
# What the bundled assets are: the script must define the global the page calls.
SCRIPT_GLOBALS = {"/docs": "SwaggerUIBundle", "/redoc": "Redoc"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_page_and_everything_it_loads_come_from_the_controller(controller: Controller, page: str) -> None:
    with controller.client() as client:
        html = client.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert "://" not in html.text, html.text  # no absolute URL at all: no CDN, no web font
        references = [a or b for a, b in REFERENCE.findall(html.text)]
        assert len(references) >= 3, html.text  # script, favicon, the OpenAPI document (+ stylesheet)
        for url in references:
            assert url.startswith("/") and not url.startswith("//"), url
            asset = client.get(url)
            assert asset.status_code == 200, (url, asset.status_code)
            suffix = url[url.rfind(".") :]
            assert asset.headers["content-type"].split(";")[0] in CONTENT_TYPES[suffix], (url, asset.headers)
        scripts = [url for url in references if url.endswith(".js")]
        assert len(scripts) == 1
        assert SCRIPT_GLOBALS[page] in client.get(scripts[0]).text
