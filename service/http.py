"""The HTTP connection of ``riskgate serve``: uvicorn's httptools protocol with bounds on a request's head and body.

uvicorn's httptools protocol has no limit of its own on the request line and
headers: a client (before any API key is checked) could send one header of
hundreds of megabytes, which the service buffered whole while its event loop
copied it again at every piece (400 MB took 269 s and 0.5 GB, the service
answering nothing meanwhile), or trickle a head one byte a minute to hold a
connection for ever. :class:`BoundedHttpProtocol` answers such a request with
``431 Request Header Fields Too Large`` (a head over :data:`MAX_HEAD_BYTES`) or
``408 Request Timeout`` (a head not complete ``head_timeout`` seconds after it
began) and closes the connection, and closes one whose chunked body carries more than that of framing and
trailer fields (which httptools buffers like headers). A body trickled a byte at a time held its connection
for ever too (uvicorn has no timeout while a request's body arrives; its keep-alive timeout runs only between
requests): a body not complete ``body_timeout`` seconds after its headers is answered ``408`` and its connection
closed. Everything else is uvicorn's.

:class:`AnnouncingServer` is uvicorn's server telling ``riskgate serve`` when it has started (the application's
startup done, its sockets accepting connections), for the line that says where it listens.
"""

from __future__ import annotations

import asyncio
from typing import Callable

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

#: The most bytes a request's line and headers may take (Node.js allows 16 KiB, nginx 32 KiB by default).
MAX_HEAD_BYTES = 64 * 1024
#: Seconds a request's line and headers may take to arrive, from their first byte (`serve --header-timeout`).
HEAD_TIMEOUT_S = 30.0
#: Seconds a request's body may take to arrive, from the end of its headers (`serve --body-timeout`). Bodies are
#: one event or one Cognito call (at most 1 MiB, ``service.app.MAX_BODY_BYTES``): a few kilobytes.
BODY_TIMEOUT_S = 30.0
#: Bytes of framing allowed per chunk of a chunked body (its size line and CRLFs), beyond MAX_HEAD_BYTES for the
#: whole body's framing and trailer section
CHUNK_FRAMING = 64


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request whose head is too large or too slow (module docstring).

    A head is measured as parsed (its URL and headers, refused at their end when over the limit) and, so that
    a head that never ends is not buffered on, by the pieces the socket delivers after the one it began in (the
    pieces it shares with the requests pipelined before it never count; at most two pieces more than the limit
    are read). While a body is read, what is not body (a chunked body's framing and its trailer section, which
    httptools buffers like headers), less :data:`CHUNK_FRAMING` bytes for each chunk of the same piece, may come
    to the same limit. A head's refusal waits for the answers still owed to requests before it on the
    connection, reading nothing more meanwhile; a body's closes the connection (the application already has
    that request).

    A body's time counts while the service reads it: when uvicorn has paused reading (body the application has not
    taken yet), the request waits in the pipeline behind one still being answered, or its client waits for the
    ``100 Continue`` its application sends when it starts, the wait is the service's, and the body gets
    ``body_timeout`` seconds more, and at least that much after the wait ended. A body that is late while nothing was answered yet gets ``408``; once
    an answer has begun (the application answered without reading it all) the connection is only closed.
    """

    head_timeout: float = HEAD_TIMEOUT_S
    body_timeout: float = BODY_TIMEOUT_S
    max_head_bytes: int = MAX_HEAD_BYTES

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._phase = "idle"  # "head" (line and headers), "body" (to the message's end), "idle"
        self._head_bytes = 0  # bytes of the head after the piece it began in
        self._extra_bytes = 0  # bytes of the body's pieces that were not body (chunk framing, trailers)
        self._head_size = 0  # the head's own bytes: its line (the URL) and headers, as parsed
        self._began_here = False  # the head began in the piece being read
        self._body_here = 0  # body bytes of the piece being read
        self._chunks_here = 0  # chunks begun in the piece being read
        self._timer: asyncio.TimerHandle | None = None  # the head's or the body's deadline (one phase at a time)
        self._service_waited = False  # the body's last period ended in the service's wait (see _body_too_slow)
        self._refusal: tuple[int, str] | None = None  # waiting for the answers owed before it

    @classmethod
    def configured(cls, *, head_timeout: float = HEAD_TIMEOUT_S, body_timeout: float = BODY_TIMEOUT_S,
                   max_head_bytes: int = MAX_HEAD_BYTES) -> type[BoundedHttpProtocol]:
        """This protocol with its limits set (uvicorn takes a class: ``uvicorn.run(..., http=...)``)."""
        return type(cls.__name__, (cls,), {"head_timeout": float(head_timeout), "body_timeout": float(body_timeout),
                                           "max_head_bytes": int(max_head_bytes)})

    # the parser's callbacks: where a request is (once a request is refused, the rest of its piece is not)

    def on_message_begin(self) -> None:
        if self._refusal is not None:
            return
        super().on_message_begin()
        self._phase = "head"
        self._head_bytes = 0
        self._head_size = 0
        self._began_here = True
        self._set_timer(self.head_timeout, self._head_too_slow)

    def on_url(self, url: bytes) -> None:
        if self._refusal is None:
            self._head_size += len(url)
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refusal is not None:
            return
        if self._phase == "head":  # (httptools gives a chunked body's trailer fields here too)
            self._head_size += len(name) + len(value) + 4  # "name: value\r\n"
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refusal is not None:
            return
        if self._head_size > self.max_head_bytes:  # all of it in one or two pieces: refused before it is served
            self._refuse(431, f"the request line and headers exceed {self.max_head_bytes:,} bytes")
            return
        self._phase = "body"
        self._extra_bytes = 0
        self._service_waited = False
        self._set_timer(self.body_timeout, self._body_too_slow)  # cancelled at once when there is no body
        super().on_headers_complete()

    def on_chunk_header(self) -> None:
        self._chunks_here += 1

    def on_body(self, body: bytes) -> None:
        if self._refusal is None:
            self._body_here += len(body)
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refusal is None:
            self._phase = "idle"
            self._cancel_timer()
            super().on_message_complete()

    # the socket's pieces

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:  # refused: nothing more is read (the answers owed before it are sent)
            return
        phase = self._phase
        self._began_here = False
        self._body_here = self._chunks_here = 0
        super().data_received(data)
        if self.transport.is_closing() or self._refusal is not None:
            return
        if self._phase == "head" and not self._began_here:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, f"the request line and headers exceed {self.max_head_bytes:,} bytes")
        elif self._phase == "body" and phase == "body":  # the whole piece is this body's (no head, no next request)
            # what is not body, less a chunk's framing for each chunk of the piece (no credit carried over)
            framing = len(data) - self._body_here - CHUNK_FRAMING * self._chunks_here
            self._extra_bytes = max(0, self._extra_bytes + framing)
            if self._extra_bytes > self.max_head_bytes:
                # its answer is under way (the application has the request): no refusal can go before it
                self._log_refusal(f"the request's chunk framing and trailers exceed {self.max_head_bytes:,} bytes; "
                                  "connection closed")
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refusal is not None and not self._answers_owed() and not self.transport.is_closing():
            self._send_refusal(*self._refusal)

    # refusing

    def _head_too_slow(self) -> None:
        self._timer = None
        if self._phase == "head" and self._refusal is None and not self.transport.is_closing():
            self._refuse(408, f"the request line and headers did not arrive within {self.head_timeout:g} s")

    def _body_too_slow(self) -> None:
        self._timer = None
        if self._phase != "body" or self._refusal is not None or self.transport.is_closing():
            return
        # the wait is the service's, not the client's, while uvicorn is not reading, while the request waits in the
        # pipeline for the answers before it (reading may have resumed: an earlier request's application reads its
        # own body), and while its client waits for the 100 Continue sent when the request's application starts.
        # The wait may end anywhere in a period (a 100 Continue sent just before the timer fires): after a period
        # that ended in it, the client gets one whole period more before its body is late.
        waiting = self.flow.read_paused or self.pipeline or getattr(self.cycle, "waiting_for_100_continue", False)
        if waiting or self._service_waited:
            self._service_waited = bool(waiting)
            self._set_timer(self.body_timeout, self._body_too_slow)
            return
        message = f"the request body did not arrive within {self.body_timeout:g} s of its headers"
        self._refusal = (408, message)  # nothing more is read
        if self.cycle is not None and not self.cycle.response_started:
            self._log_refusal(message)
            self._send_refusal(408, message)  # the application, waiting for the body, is told of a disconnect
        else:
            self._log_refusal(message + " (its answer already begun); connection closed")
            self.transport.close()

    def _set_timer(self, seconds: float, callback) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(seconds, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _answers_owed(self) -> bool:
        """Whether requests before the one whose head is refused (which has no cycle yet) still wait for their
        answers on this connection."""
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def _log_refusal(self, message: str) -> None:
        self.logger.warning("refused a request from %s: %s", "%s:%d" % self.client if self.client else "?", message)

    def _refuse(self, status: int, message: str) -> None:
        """Answer the request whose head is being read with ``status`` and close, after the answers owed."""
        self._refusal = (status, message)
        self._cancel_timer()
        self._log_refusal(message)
        if self._answers_owed():
            self.transport.pause_reading()  # on_response_complete sends the refusal once they are answered
        else:
            self._send_refusal(status, message)

    def _send_refusal(self, status: int, message: str) -> None:
        body = message.encode("ascii")
        self.transport.write(b"".join([
            STATUS_LINE[status],
            *(b"".join([name, b": ", value, b"\r\n"]) for name, value in self.server_state.default_headers),
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]))
        self.transport.close()


class AnnouncingServer(uvicorn.Server):
    """uvicorn's server, calling ``on_started()`` once it has started: the application's startup complete (the
    lifespan: the store open, its state loaded) and every socket listening, so that a client connecting when it is
    told may connect (uvicorn has no hook of its own for that moment; it is the end of ``Server.startup``)."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_started = on_started

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.on_started()
