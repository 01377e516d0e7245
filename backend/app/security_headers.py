"""Security headers on every answer, and the API docs page served from local assets.

Pages, the API and the share page get a same-origin-only Content-Security-Policy (plotly.js, the
page scripts and Swagger UI are all served by this server), no framing, no MIME sniffing and no
Referer (share URLs carry their token). A route that needs another policy sets its own header,
which is kept: the HTML export does (frontend/report.py, EXPORT_CSP), and so does /docs.
"""
from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from robaudit.frontend.templating import plotly_style_hashes

# plotly.js adds most of its CSS through the CSSOM (insertRule, which CSP does not govern) into <style>
# elements it creates empty: the hash of the empty string allows exactly those, and no inline CSS.
EMPTY_STYLE = "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
# plotly.js draws the <b> and <i> of our hover texts as SVG style attributes with exactly these
# values; 'unsafe-hashes' allows those two values and no other style attribute.
PLOTLY_TAG_STYLES = ("font-weight:bold", "font-style:italic")
OTHER_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
SWAGGER_DIR = "/static/vendor/swagger-ui"


def _sha256(text: str) -> str:
    return f"'sha256-{base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()}'"


@lru_cache(maxsize=1)
def page_csp() -> str:
    """Same origin only; inline styles and style attributes only those plotly.js writes (by hash)."""
    styles = " ".join(("'self'", EMPTY_STYLE, *plotly_style_hashes()))
    attrs = " ".join(("'unsafe-hashes'", *(_sha256(v) for v in PLOTLY_TAG_STYLES)))
    return (f"default-src 'self'; script-src 'self'; style-src {styles}; style-src-attr {attrs}; "
            "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class SecurityHeaders:
    """ASGI middleware: adds the headers to every HTTP answer that does not set them itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = {"Content-Security-Policy": page_csp(), **OTHER_HEADERS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def add_docs(app: FastAPI) -> None:
    """/docs: Swagger UI from frontend/static/vendor (swagger-ui-dist, see its LICENSE), no CDN.

    FastAPI's page starts Swagger UI with one inline script; the policy allows exactly that script
    by its hash. (ReDoc is off: create_app passes redoc_url=None.)
    """
    page = get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} · API docs",
                               swagger_js_url=f"{SWAGGER_DIR}/swagger-ui-bundle.js",
                               swagger_css_url=f"{SWAGGER_DIR}/swagger-ui.css",
                               swagger_favicon_url=f"{SWAGGER_DIR}/favicon-32x32.png")
    body = bytes(page.body)
    hashes = " ".join(_sha256(s) for s in re.findall(r"<script>(.*?)</script>", body.decode(), re.S))
    csp = page_csp().replace("script-src 'self'", f"script-src 'self' {hashes}")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return HTMLResponse(body, headers={"Content-Security-Policy": csp})
