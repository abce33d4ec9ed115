"""The web page's guards: the login beyond loopback (HTTP Basic with a
generated password kept 0600 in the state dir, as `farm up --bind` keeps
Redis's), CSRF tokens for every POST, and the Host names a loopback page
answers to (a DNS-rebinding page must not reach it by another name)."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from pathlib import Path

from farm.queue.up import generated_password, is_loopback

LOGIN_USER = "farm"
CSRF_COOKIE = "farm_csrf"
CSRF_FIELD = "csrf"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def password_file(state: Path) -> Path:
    return state / "web.password"


def login_password(bind: str, state: Path) -> str | None:
    """None on loopback (no login); beyond it the generated password."""
    return None if is_loopback(bind) else generated_password(password_file(state))


def login_ok(authorization: str | None, password: str) -> bool:
    """An `Authorization: Basic ...` header naming farm and the password."""
    scheme, _, blob = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, given = base64.b64decode(blob.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    # compare both in full whatever the first says: no timing hint
    user_ok = hmac.compare_digest(user.encode(), LOGIN_USER.encode())
    return bool(sep) & user_ok & hmac.compare_digest(given.encode(), password.encode())


def new_csrf_cookie() -> str:
    return secrets.token_urlsafe(32)


def csrf_token(secret: bytes, cookie: str) -> str:
    """The form token for a browser's cookie: only this server can make it."""
    return hmac.new(secret, cookie.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: bytes, cookie: str | None, token: str | None) -> bool:
    """A POST carries the cookie this server set and the token made from it.
    A forged form elsewhere has neither: the cookie is SameSite=Strict and
    HttpOnly, and the token needs the server's secret."""
    if not cookie or not token:
        return False
    return hmac.compare_digest(csrf_token(secret, cookie), token)


def allowed_hosts(bind: str) -> list[str]:
    """The Host names the page answers to: on loopback only loopback names
    (and the bound address); beyond it, with the login, any."""
    if not is_loopback(bind):
        return ["*"]
    return sorted({*LOOPBACK_NAMES, bind})
