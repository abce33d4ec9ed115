"""The Starlette app behind `farm web`: routes, guards and templates.

Handlers that read Redis or the database are plain functions (Starlette
runs them in its thread pool); the POST handlers await the form, check its
CSRF token, then do the change in the pool, through farm/queue/operator.py
as the command line does."""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from farm.errors import BadInput
from farm.queue.operator import HEALTH_ACTIONS, change_health, submit_job_file
from farm.web import metrics as metrics_mod
from farm.web import security, views

HERE = Path(__file__).parent
SECURITY_HEADERS = {
    # everything the pages use comes from here: no inline script, nothing fetched elsewhere
    "Content-Security-Policy": "default-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class WebContext:
    """What the pages read and change: the lab's registry and Celery app,
    the results database (opened on first use), the jobs directory."""
    registry: object
    celery: object
    jobs_dir: Path
    bind: str = "127.0.0.1"
    password: str | None = None        # None: no login (loopback)
    store_url: str | None = None
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    _store: object = None

    def store(self):
        if self._store is None:
            from farm.store import open_store
            self._store = open_store(self.store_url)
        return self._store


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _when(t) -> str:
    if t is None:
        return "–"
    when = datetime.fromtimestamp(t) if isinstance(t, (int, float)) else t
    return f"{when:%Y-%m-%d %H:%M:%S}"


def _templates() -> Jinja2Templates:
    def common(request: Request) -> dict:
        return {"csrf_field": security.CSRF_FIELD,
                "csrf_token": security.csrf_token(request.app.state.ctx.secret, request.state.csrf_cookie)}
    t = Jinja2Templates(directory=str(HERE / "templates"), context_processors=[common])
    t.env.filters.update(age=_age, when=_when)
    return t


TEMPLATES = _templates()


def page(request: Request, name: str, status_code: int = 200, **context) -> Response:
    return TEMPLATES.TemplateResponse(request, name, {**context, "status_code": status_code},
                                      status_code=status_code)


def _ctx(request: Request) -> WebContext:
    return request.app.state.ctx


# -- guards ---------------------------------------------------------------------------


class Guard(BaseHTTPMiddleware):
    """The login (beyond loopback), the CSRF cookie, the security headers."""

    async def dispatch(self, request: Request, call_next):
        ctx = _ctx(request)
        if ctx.password is not None and not security.login_ok(request.headers.get("authorization"),
                                                              ctx.password):
            return PlainTextResponse("login required\n", status_code=401,
                                     headers={"WWW-Authenticate": 'Basic realm="farm", charset="UTF-8"'})
        cookie = request.cookies.get(security.CSRF_COOKIE)
        fresh = None if cookie else security.new_csrf_cookie()
        request.state.csrf_cookie = cookie or fresh
        response = await call_next(request)
        if fresh:
            response.set_cookie(security.CSRF_COOKIE, fresh, httponly=True, samesite="strict", path="/")
        response.headers.update(SECURITY_HEADERS)
        return response


async def checked_form(request: Request):
    """The POSTed form, once its CSRF token matches this browser's cookie."""
    form = await request.form()
    if not security.csrf_ok(_ctx(request).secret, request.cookies.get(security.CSRF_COOKIE),
                            form.get(security.CSRF_FIELD)):
        raise HTTPException(403, "CSRF token missing or wrong: reload the page and try again")
    return form


# -- pages ----------------------------------------------------------------------------


def hosts_page(request: Request):
    rows = views.hosts(_ctx(request).registry)
    name = "_hosts.html" if request.query_params.get("part") else "hosts.html"
    return page(request, name, hosts=rows, actions=HEALTH_ACTIONS)


def confirm_health(request: Request):
    host, action = request.path_params["host"], request.path_params["action"]
    if action not in HEALTH_ACTIONS:
        raise HTTPException(404)
    if host not in views.host_names(_ctx(request).registry):
        raise HTTPException(404, f"unknown host {host!r}")
    return page(request, "confirm.html", host=host, action=action)


async def change_health_post(request: Request):
    await checked_form(request)
    host, action = request.path_params["host"], request.path_params["action"]
    await run_in_threadpool(change_health, _ctx(request).registry, host, action)
    return RedirectResponse("/hosts", status_code=303)


def queues_page(request: Request):
    ctx = _ctx(request)
    return page(request, "queues.html", queues=views.queues(ctx.registry),
                submissions=views.submissions(ctx.registry), now=time.time())


def submission_page(request: Request):
    prog = views.progress(_ctx(request).registry, request.path_params["sub_id"])
    name = "_progress.html" if request.query_params.get("part") else "submission.html"
    return page(request, name, p=prog)


def submit_form(request: Request):
    return page(request, "submit.html", jobs=list(views.job_files(_ctx(request).jobs_dir)), error=None, form={})


async def submit_post(request: Request):
    form = await checked_form(request)
    ctx = _ctx(request)
    jobs = await run_in_threadpool(views.job_files, ctx.jobs_dir)
    fields = {k: str(form.get(k, "")) for k in ("job", "where", "hosts", "duration")}
    try:
        # a name from the list, never a path from the request
        if fields["job"] not in jobs:
            raise BadInput(f"no job {fields['job']!r} in {ctx.jobs_dir}/")
        sub = await run_in_threadpool(submit_job_file, ctx.celery, ctx.registry, jobs[fields["job"]],
                                      fields["where"], fields["hosts"], form.get("all") == "on",
                                      fields["duration"] or None)
    except BadInput as e:
        return page(request, "submit.html", status_code=400, jobs=list(jobs), error=str(e), form=fields)
    return RedirectResponse(f"/submissions/{sub['id']}", status_code=303)


def triage_index(request: Request):
    from farm.report import html
    store = _ctx(request).store()
    sigs, wheres = html.kernel_signatures(store)
    return page(request, "triage.html", title="triage", body=html.index_body(store, sigs, wheres))


def triage_signature(request: Request):
    from farm.report import html
    store = _ctx(request).store()
    sigs, wheres = html.kernel_signatures(store)
    sig = next((s for s in sigs if s.id == request.path_params["sig_id"]), None)
    if sig is None:
        raise HTTPException(404, "no such kernel signature")
    return page(request, "triage.html", title=f"#{sig.id} {sig.text}",
                body=html.signature_body(store, sig, wheres[sig.id]))


def metrics(request: Request):
    """Prometheus text (farm/web/metrics.py)."""
    ctx = _ctx(request)
    return Response(metrics_mod.exposition(ctx.store(), ctx.registry), media_type=metrics_mod.CONTENT_TYPE)


def report_css(request: Request):
    """The triage report's own CSS (its matrix colours) and the pages' own."""
    from farm.report.html import CSS
    return Response(CSS + (HERE / "static" / "web.css").read_text(), media_type="text/css")


async def bad_input(request: Request, exc: BadInput):
    return page(request, "error.html", status_code=400, message=str(exc))


async def http_error(request: Request, exc: HTTPException):
    if not hasattr(request.state, "csrf_cookie"):  # refused before the guard ran (a 404 of routing)
        request.state.csrf_cookie = security.new_csrf_cookie()
    return page(request, "error.html", status_code=exc.status_code, message=exc.detail)


def make_app(ctx: WebContext) -> Starlette:
    routes = [
        Route("/", lambda request: RedirectResponse("/hosts", status_code=303)),
        Route("/hosts", hosts_page),
        Route("/hosts/{host}/{action}", confirm_health, methods=["GET"]),
        Route("/hosts/{host}/{action}", change_health_post, methods=["POST"]),
        Route("/queues", queues_page),
        Route("/submissions/{sub_id}", submission_page),
        Route("/submit", submit_form, methods=["GET"]),
        Route("/submit", submit_post, methods=["POST"]),
        Route("/triage/", triage_index),
        Route("/triage/index.html", triage_index),
        Route("/triage/sig-{sig_id:int}.html", triage_signature),
        Route("/metrics", metrics),
        Route("/style.css", report_css),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes,
                    middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=security.allowed_hosts(ctx.bind)),
                                Middleware(Guard)],
                    exception_handlers={BadInput: bad_input, HTTPException: http_error})
    app.state.ctx = ctx
    return app
