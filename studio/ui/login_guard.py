"""Nothing before login: with `--auth`, a visitor who has not logged in gets the login page and nothing else.

Gradio answers `/config` and `/gradio_api/info` with 401 before login, but its page route (`GET /`)
embeds the whole API schema (`window.gradio_api_info`: every endpoint, with its parameters and the
components' choices) in the login page's HTML. `LoginGuard` is an ASGI middleware that, for a request
without a valid login, replaces that schema with an empty one. The schema is JSON escaped for an
HTML script (no `<` in it), so it ends at the first `;</script>`; a page that names the schema in
any other shape is refused outright rather than sent (fail closed, e.g. after a Gradio upgrade).

The studio also bakes no user data into its components at build time: run, dataset and model lists
are filled when the page loads, after login.
"""

from __future__ import annotations

import re
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

SCHEMA = re.compile(rb"window\.gradio_api_info = .*?;</script>", re.DOTALL)
EMPTY_SCHEMA = b'window.gradio_api_info = {"named_endpoints": {}, "unnamed_endpoints": {}};</script>'
MARKER = b"gradio_api_info"


def logged_in(app: Any, scope: Scope) -> bool:
    """Whether the request carries a token of a login (Gradio's own cookies and token table)."""
    cookies: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                cookies[key] = val
    cookie_id = getattr(app, "cookie_id", None)
    tokens = getattr(app, "tokens", {})
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
    return token is not None and token in tokens


def withhold_schema(body: bytes) -> bytes | None:
    """The page with an empty API schema; None when the schema is there in a shape we don't know."""
    if MARKER not in body:
        return body
    if MARKER in SCHEMA.sub(b"", body):
        return None
    return SCHEMA.sub(EMPTY_SCHEMA, body)


class LoginGuard:
    """ASGI middleware: before login, HTML pages go out without the API schema (see the module doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive, send) -> None:
        gradio_app = scope.get("app")
        if (scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD")
                or getattr(gradio_app, "auth", None) is None or logged_in(gradio_app, scope)):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def buffered(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                if not _is_html(message):
                    await send(message)
                return
            if message["type"] != "http.response.body" or start is None or not _is_html(start):
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = withhold_schema(b"".join(chunks))
            if body is None:
                body = b"LoRA Studio: this page is not available before login."
                start = {**start, "status": 500}
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body if scope["method"] == "GET" else b""})

        await self.app(scope, receive, buffered)


def _is_html(start: Message) -> bool:
    return any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in start.get("headers", []))
