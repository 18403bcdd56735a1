"""``riskgate serve``: the HTTP service (inline decisions and Cognito's risk operations)."""

from __future__ import annotations

import errno
import logging
import os
import sys
from typing import Annotated

import typer

from cli.common import DbOption, app, err_console, handle_errors

#: ``service.http.HEAD_TIMEOUT_S`` and ``BODY_TIMEOUT_S`` (not imported here: that imports uvicorn, for every
#: ``riskgate --help``)
HEADER_TIMEOUT_S = 30.0
BODY_TIMEOUT_S = 30.0


@app.command()
@handle_errors
def serve(
    db: DbOption = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (default loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8080,
    request_timeout: Annotated[float, typer.Option("--request-timeout", min=0.1, help="Seconds a request may wait for the store (another process's turn) before a 503 with Retry-After.")] = 30.0,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log one line per request (method, path, status; never bodies).")] = True,
    header_timeout: Annotated[float, typer.Option("--header-timeout", min=0.1, help="Seconds a request's line and headers may take to arrive (then 408 and the connection closed); they may take at most 64 KiB (then 431).")] = HEADER_TIMEOUT_S,
    body_timeout: Annotated[float, typer.Option("--body-timeout", min=0.1, help="Seconds a request's body may take to arrive after its headers (then 408 and the connection closed); it may take at most 1 MiB (then 413).")] = BODY_TIMEOUT_S,
) -> None:
    """Serve POST /v1/evaluate (inline decisions) and Cognito's risk operations over HTTP; needs $RISKGATE_API_KEY."""
    import uvicorn

    from ingest.lease import hold_serving, note_serving_address
    from ingest.store import resolve_db_path
    from service.app import API_KEY_ENV, RedactedAccessLog, asgi, check_api_key, create_app, start, stop
    from service.http import AnnouncingServer, BoundedHttpProtocol

    key = check_api_key(os.environ.get(API_KEY_ENV))
    application = create_app(resolve_db_path(db), key, request_timeout=request_timeout)  # settings checked
    lease = hold_serving(resolve_db_path(db), f"http://{host}:{port}")  # one service per store, held until it ends
    sock = listening_socket(host, port)  # before saying so: a port in use is one line and exit 2
    address = f"http://{'[' + host + ']' if ':' in host else host}:{sock.getsockname()[1]}"
    note_serving_address(lease, address)  # the lease names the port obtained (--port 0), not the one asked
    # the store opened and its state loaded before uvicorn runs: a store another process holds past
    # $RISKGATE_STORE_WAIT is one line and exit 2 (in the application's startup, it was uvicorn's traceback and 3)
    start(application)

    def announce() -> None:  # once the port accepts and the application is ready (not before: clients were refused)
        err_console.print(f"riskgate serve: store {resolve_db_path(db)}, listening on {address}", highlight=False,
                          soft_wrap=True)  # one line, whatever the width: a log line

    # the event loop and the store thread share the GIL: a short switch interval lets the loop answer
    # while the store thread assesses (the default 5 ms would add up to 5 ms per hand-over of the GIL)
    sys.setswitchinterval(0.0005)
    # a feedback link's token never reaches the access log (uvicorn configures its loggers, keeping this filter)
    logging.getLogger("uvicorn.access").addFilter(RedactedAccessLog())
    # keep idle connections longer than the usual client pools and load balancers (60 s) do, so that a
    # client never reuses a connection the server is just closing; a request's head is bounded in size and time
    # and body in time (service.http: uvicorn's httptools protocol has no bound of its own)
    config = uvicorn.Config(asgi(application), access_log=access_log, log_level="info",
                            http=BoundedHttpProtocol.configured(head_timeout=header_timeout, body_timeout=body_timeout),
                            timeout_keep_alive=75, timeout_graceful_shutdown=10)
    service_log_to_stderr()  # (after uvicorn's own logging set-up, which leaves other loggers as they are)
    # a uvicorn.Server (which says when it has started), not uvicorn.run: that swallows the Ctrl-C uvicorn raises again once it has shut down (exit 0);
    # here it ends as every command's does ("interrupted", exit 130), after the graceful shutdown
    try:
        AnnouncingServer(config, on_started=announce).run(sockets=[sock])
    finally:
        stop(application)  # (the application's shutdown has stopped it, unless uvicorn ended before its startup)


def service_log_to_stderr() -> None:
    """The service's own log (the ``riskgate`` loggers: a notification that failed or was sent on a later attempt,
    a scorer that could not be prepared, hand-overs of the store) on stderr from INFO on, as uvicorn writes its
    lines (``WARNING:  ...``). Without it only warnings reached stderr, without their level, and INFO lines none."""
    from uvicorn.logging import DefaultFormatter

    logger = logging.getLogger("riskgate")
    if not any(getattr(h, "_riskgate_serve", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s"))
        handler._riskgate_serve = True  # noqa: SLF001 - once per process
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def listening_socket(host: str, port: int):
    """A TCP socket bound to ``host``:``port`` (0: any free port), as uvicorn would bind it; a clear error when it
    cannot be (the port in use, an address this machine does not have or cannot resolve)."""
    import socket

    from ingest.errors import RiskgateError

    try:  # as uvicorn binds: IPv6 when the host has a colon, else IPv4 (``localhost``: 127.0.0.1)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        where = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][4]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise RiskgateError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(where)
    except OSError as exc:
        sock.close()
        raise RiskgateError(f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                            + (" (another process listens there)" if exc.errno == errno.EADDRINUSE else "")) from None
    sock.set_inheritable(True)
    return sock
