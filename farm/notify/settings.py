"""Where reports go: the `reports:` section of the farm config, checked.

    reports:
      smtp:
        host: mail.example.org
        port: 587                      # default 25
        from: farm@example.org
        to: [bpf-ci@example.org]       # or one address
        starttls: true                 # default false
        user: farm                     # optional, with password_file
        password_file: /etc/farm/smtp.password
      webhook:
        url: https://ci.example.org/hooks/farm
        token_file: /etc/farm/webhook.token   # optional
        token_header: Authorization           # default; sent as "Bearer TOKEN"
      retry_first_s: 60                # first retry after a failed delivery
      retry_max_s: 3600                # backoff doubles up to this

A secret is never in the config itself nor on a command line: `password`
or `token` keys are refused, and the files they are read from must not be
readable by group or others. Every wrong value is one line, exit 2.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from farm.errors import BadInput, shown

CHANNELS = ("smtp", "webhook")
_ADDRESS = re.compile(r"[^@\s<>,]+@[^@\s<>,]+")
_HEADER = re.compile(r"[A-Za-z0-9-]{1,64}")
_SECRET_KEYS = {"password", "token", "pass", "secret"}


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int
    sender: str
    to: tuple[str, ...]
    starttls: bool = False
    user: str | None = None
    password_file: Path | None = None
    timeout_s: float = 30.0

    def password(self) -> str | None:
        return read_secret(self.password_file, "reports.smtp.password_file") if self.password_file else None


@dataclass(frozen=True)
class Webhook:
    url: str
    token_file: Path | None = None
    token_header: str = "Authorization"
    timeout_s: float = 30.0

    def auth_header(self) -> tuple[str, str] | None:
        if self.token_file is None:
            return None
        token = read_secret(self.token_file, "reports.webhook.token_file")
        return self.token_header, f"Bearer {token}" if self.token_header.lower() == "authorization" else token


@dataclass(frozen=True)
class Delivery:
    smtp: Smtp | None = None
    webhook: Webhook | None = None
    retry_first_s: float = 60.0
    retry_max_s: float = 3600.0

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(c for c in CHANNELS if getattr(self, c) is not None)


def read_secret(path: Path, what: str) -> str:
    """A secret file's first line; a file others may read is refused."""
    try:
        st = path.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise BadInput(f"{what} {path}: readable by group or others (chmod 600 it)")
        text = path.read_text()
    except OSError as e:
        raise BadInput(f"{what} {path}: {e.strerror}") from None
    secret = (text.splitlines() or [""])[0].strip()
    if not secret:
        raise BadInput(f"{what} {path}: empty")
    return secret


def _keys(section: dict, where: str, allowed: set[str]) -> None:
    for k in section:
        if str(k).lower() in _SECRET_KEYS:
            raise BadInput(f"{where}.{k} in the farm config: never put a secret in the config; "
                           f"name a file with {'password_file' if 'pass' in str(k) else 'token_file'}")
        if k not in allowed:
            raise BadInput(f"{where} in the farm config: unknown key {shown(k)} "
                           f"(known: {', '.join(sorted(allowed))})")


def _text(section: dict, key: str, where: str, required: bool = True) -> str | None:
    v = section.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v.strip() or not v.isprintable():
        raise BadInput(f"{where}.{key} in the farm config is {'required: ' if v is None else ''}"
                       f"a non-empty string" + ("" if v is None else f", not {shown(v)}"))
    return v.strip()


def _number(section: dict, key: str, where: str, default: float, lo: float, hi: float, integer=False):
    v = section.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)) or not lo <= v <= hi:
        raise BadInput(f"{where}.{key} in the farm config is {'an integer' if integer else 'a number'} "
                       f"from {lo:g} to {hi:g}, not {shown(v)}")
    return v


def _file(section: dict, key: str, where: str) -> Path | None:
    v = _text(section, key, where, required=False)
    if v is None:
        return None
    path = Path(v)
    if not path.is_absolute():
        raise BadInput(f"{where}.{key} in the farm config is an absolute path, not {shown(v)}")
    read_secret(path, f"{where}.{key}")  # there, private and not empty: said now, not at the first report
    return path


def _smtp(raw, where: str = "reports.smtp") -> Smtp:
    if not isinstance(raw, dict):
        raise BadInput(f"{where} in the farm config is a mapping (host, port, from, to, ...)")
    _keys(raw, where, {"host", "port", "from", "to", "starttls", "user", "password_file", "timeout_s"})
    host = _text(raw, "host", where)
    port = _number(raw, "port", where, 25, 1, 65535, integer=True)
    sender = _text(raw, "from", where)
    if not _ADDRESS.fullmatch(sender):
        raise BadInput(f"{where}.from in the farm config is an e-mail address, not {shown(sender)}")
    to = raw.get("to")
    to = [to] if isinstance(to, str) else to
    if not isinstance(to, list) or not to or not all(isinstance(a, str) and _ADDRESS.fullmatch(a.strip())
                                                     for a in to):
        raise BadInput(f"{where}.to in the farm config is an e-mail address or a list of them, not {shown(to)}")
    starttls = raw.get("starttls", False)
    if not isinstance(starttls, bool):
        raise BadInput(f"{where}.starttls in the farm config is true or false, not {shown(starttls)}")
    user = _text(raw, "user", where, required=False)
    password_file = _file(raw, "password_file", where)
    if (user is None) != (password_file is None):
        raise BadInput(f"{where} in the farm config: user and password_file go together")
    return Smtp(host, port, sender, tuple(a.strip() for a in to), starttls, user, password_file,
                float(_number(raw, "timeout_s", where, 30, 1, 600)))


def _webhook(raw, where: str = "reports.webhook") -> Webhook:
    if not isinstance(raw, dict):
        raise BadInput(f"{where} in the farm config is a mapping (url, token_file, ...)")
    _keys(raw, where, {"url", "token_file", "token_header", "timeout_s"})
    url = _text(raw, "url", where)
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise BadInput(f"{where}.url in the farm config is an http:// or https:// URL, not {shown(url)}")
    if re.match(r"https?://[^/]*@", url):
        raise BadInput(f"{where}.url in the farm config: no credentials in the URL; use token_file")
    header = _text(raw, "token_header", where, required=False) or "Authorization"
    if not _HEADER.fullmatch(header):
        raise BadInput(f"{where}.token_header in the farm config is a header name, not {shown(header)}")
    return Webhook(url, _file(raw, "token_file", where), header,
                   float(_number(raw, "timeout_s", where, 30, 1, 600)))


def delivery(raw: dict | None = None) -> Delivery:
    """The checked `reports:` section (the farm config's when raw is None);
    Delivery() with no channel when there is none."""
    if raw is None:
        from farm.config import reports_section
        raw = reports_section()
    if not isinstance(raw, dict):
        raise BadInput("reports in the farm config is a mapping (smtp:, webhook:)")
    _keys(raw, "reports", {"smtp", "webhook", "retry_first_s", "retry_max_s"})
    first = float(_number(raw, "retry_first_s", "reports", 60, 0.01, 86400))
    most = float(_number(raw, "retry_max_s", "reports", 3600, 0.01, 7 * 86400))
    if most < first:
        raise BadInput("reports.retry_max_s in the farm config is at least retry_first_s")
    return Delivery(_smtp(raw["smtp"]) if raw.get("smtp") is not None else None,
                    _webhook(raw["webhook"]) if raw.get("webhook") is not None else None, first, most)


def configured(d: Delivery) -> Delivery:
    """d, or BadInput when it delivers nowhere."""
    if not d.channels:
        raise BadInput("no report delivery configured: set reports.smtp and/or reports.webhook "
                       f"in the farm config ({os.environ.get('FARM_CONFIG') or '<state>/config.yaml'})")
    return d
