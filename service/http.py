"""The HTTP connection of ``riskgate serve``: uvicorn's httptools protocol with a bound on a request's head.

uvicorn's httptools protocol has no limit of its own on the request line and
headers: a client (before any API key is checked) could send one header of
hundreds of megabytes, which the service buffered whole while its event loop
copied it again at every piece (400 MB took 269 s and 0.5 GB, the service
answering nothing meanwhile), or trickle a head one byte a minute to hold a
connection for ever. :class:`BoundedHttpProtocol` answers such a request with
``431 Request Header Fields Too Large`` (a head over :data:`MAX_HEAD_BYTES`) or
``408 Request Timeout`` (a head not complete ``head_timeout`` seconds after it
began) and closes the connection; everything else is uvicorn's.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

#: The most bytes a request's line and headers may take (Node.js allows 16 KiB, nginx 32 KiB by default).
MAX_HEAD_BYTES = 64 * 1024
#: Seconds a request's line and headers may take to arrive, from their first byte (`serve --header-timeout`).
HEAD_TIMEOUT_S = 30.0


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request whose head is too large or too slow (module docstring)."""

    head_timeout: float = HEAD_TIMEOUT_S
    max_head_bytes: int = MAX_HEAD_BYTES

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    @classmethod
    def configured(cls, *, head_timeout: float = HEAD_TIMEOUT_S,
                   max_head_bytes: int = MAX_HEAD_BYTES) -> type[BoundedHttpProtocol]:
        """This protocol with its limits set (uvicorn takes a class: ``uvicorn.run(..., http=...)``)."""
        return type(cls.__name__, (cls,), {"head_timeout": float(head_timeout), "max_head_bytes": int(max_head_bytes)})

    # the head of each request, from its first byte (the parser's message begin) to the end of its headers

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            # the whole piece counts (also the bytes before the request began): at most one piece more than the limit
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, f"the request line and headers exceed {self.max_head_bytes:,} bytes")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(408, f"the request line and headers did not arrive within {self.head_timeout:g} s")

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: int, message: str) -> None:
        self._in_head = False
        self.logger.warning("refused a request from %s: %s", "%s:%d" % self.client if self.client else "?", message)
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
