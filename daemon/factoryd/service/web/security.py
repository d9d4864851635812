"""Who may see the page and who may act on it.

Reading: on loopback anyone on this host (the Host header must name
loopback too, so a DNS-rebound hostile site cannot read it); beyond
loopback only a browser or client holding the token from `[web] token_file`
(as `Authorization: Bearer`, or a cookie set after one visit with
`/?token=...`). A page beyond loopback with no token file is locked.

Acting: POST only, with the page's CSRF token in `X-CSRF-Token`, a JSON
body, and an `Origin` that is the page's own. Tokens are compared in
constant time and never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from factoryd.config.web import is_loopback

COOKIE = "factoryd_token"


def read_token(path: Path | None) -> str | None:
    """The first line of the token file, or None when there is none."""
    if path is None:
        return None
    token = path.read_text(encoding="utf-8").strip().splitlines()
    return token[0].strip() if token and token[0].strip() else None


def _loopback_host(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass
class Guard:
    listen: str
    token: str | None
    actions: bool
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def loopback(self) -> bool:
        return is_loopback(self.listen)

    def token_matches(self, given: str) -> bool:
        if self.token is None or not given:
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _token_ok(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        if given.startswith("Bearer "):
            return self.token_matches(given[7:].strip())
        return self.token_matches(request.cookies.get(COOKIE, ""))

    def check_read(self, request: web.Request) -> None:
        """Raise an HTTP error unless this request may read the page."""
        if self.loopback and not _loopback_host(request.host):
            raise web.HTTPForbidden(text="this page answers only to a loopback Host\n")
        if self.token is None:
            if not self.loopback:
                raise web.HTTPForbidden(
                    text="the page is locked beyond loopback: set [web] token_file\n"
                )
            return
        if not self._token_ok(request):
            raise web.HTTPUnauthorized(
                text="a token is needed: Authorization: Bearer TOKEN, or open /?token=TOKEN\n",
                headers={"WWW-Authenticate": 'Bearer realm="factoryd"'},
            )

    def check_action(self, request: web.Request) -> None:
        """Raise an HTTP error unless this POST may act (after check_read)."""
        if not self.actions:
            raise web.HTTPForbidden(text="actions are off ([web] actions = false)\n")
        origin = request.headers.get("Origin")
        allowed = {f"http://{request.host}", f"https://{request.host}"}
        if origin is None or origin not in allowed:
            raise web.HTTPForbidden(text="refused: the Origin is not this page\n")
        given = request.headers.get("X-CSRF-Token", "")
        if not given or not hmac.compare_digest(given.encode(), self.csrf.encode()):
            raise web.HTTPForbidden(text="refused: missing or wrong CSRF token\n")
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="send application/json\n")

    def who(self, request: web.Request) -> str:
        """A name for the log: how the asker got in, and from where (no secret)."""
        how = "token" if self.token is not None else "loopback"
        return f"{how}@{request.remote or '?'}"
