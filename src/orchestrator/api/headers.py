"""Security headers on every answer of the head (`orch serve`) and of `orch grade serve`.

Every response gets `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
`Referrer-Policy: no-referrer` and a Content-Security-Policy. JSON and text answers get one that
allows nothing (`default-src 'none'`). HTML (the grading page) gets one that allows exactly its
own inline <script> and <style> blocks, by their SHA-256 hashes taken from the page file when
the server starts, plus `data:` images (the page shows them as data: URIs) and fetches to the same
origin (its API calls): an injected script, inline handler or foreign resource does not run.
"""
from __future__ import annotations

import base64
import hashlib
import re

FIXED = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
         (b"referrer-policy", b"no-referrer"))
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def inline_hashes(html: str, tag: str) -> list[str]:
    """CSP hash sources ('sha256-...') of each bare <tag>...</tag> block's text, as a browser hashes it."""
    return [f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'"
            for body in re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S | re.I)]


def page_csp(html: str) -> str:
    """The policy for a page whose only code and styles are its own inline blocks."""
    scripts = " ".join(inline_hashes(html, "script")) or "'none'"
    styles = " ".join(inline_hashes(html, "style")) or "'none'"
    return (f"default-src 'none'; script-src {scripts}; style-src {styles}; img-src data:; connect-src 'self'; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


class SecurityHeaders:
    """ASGI layer, outermost: the headers above on each response start (a header the app set wins)."""

    def __init__(self, app, html_csp: str):
        self.app, self.html_csp = app, html_csp.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                html = any(n.lower() == b"content-type" and v.lower().startswith(b"text/html") for n, v in headers)
                csp = self.html_csp if html else API_CSP.encode()
                headers += [(n, v) for n, v in (*FIXED, (b"content-security-policy", csp)) if n not in names]
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, with_headers)
