"""`farm web`: the app under uvicorn on a socket opened here, so a bad
address or a port in use is one line and an exit code, not a traceback."""
from __future__ import annotations

import socket
from pathlib import Path

from farm.config import broker_url, state_dir
from farm.errors import EXIT_PASS, BadInput, InfraError
from farm.queue.up import is_loopback

DEFAULT_PORT = 8080


def listen(bind: str, port: int) -> socket.socket:
    if not 0 < port < 65536:
        raise BadInput(f"--port: {port} is not a TCP port")
    is_loopback(bind)  # BadInput for a name that is no address
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind, port))
    except OSError as e:
        sock.close()
        raise InfraError(f"farm web cannot listen on {bind}:{port}: {e.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def address(bind: str, port: int) -> str:
    return f"http://{f'[{bind}]' if ':' in bind else bind}:{port}/"


def run_web(bind: str, port: int, jobs_dir: Path) -> int:
    import uvicorn
    from farm.queue.app import app as celery
    from farm.queue.registry import Registry, connect
    from farm.web import security
    from farm.web.app import WebContext, make_app

    if not jobs_dir.is_dir():
        raise BadInput(f"--jobs: {jobs_dir} is not a directory")
    sock = listen(bind, port)
    state = state_dir()
    ctx = WebContext(Registry(connect(broker_url())), celery, jobs_dir, bind, security.login_password(bind, state))
    login = (f" (login: {security.LOGIN_USER}, the password is in {security.password_file(state)})"
             if ctx.password else "")
    print(f"farm web: {address(bind, port)}{login}", flush=True)
    server = uvicorn.Server(uvicorn.Config(make_app(ctx), log_level="warning", access_log=False,
                                           timeout_graceful_shutdown=5))
    server.run(sockets=[sock])
    return EXIT_PASS
