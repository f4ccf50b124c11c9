"""uvicorn's h11 protocol with a deadline on a request's line and headers.

uvicorn bounds only the idle time between keep-alive requests (`timeout_keep_alive`): a client
that connects and sends nothing, or sends its headers a byte at a time (slowloris), holds a
connection and a file descriptor for as long as it likes, and no ASGI layer can see it, since the
app is called only once the headers are complete. Here a timer starts when a connection opens
(and again when a kept-alive connection's next request begins to arrive) and is cancelled once
h11 has parsed the request line and headers; if it fires first, the client gets a bare 408 and
the connection is closed. The body's own deadline is an ASGI layer (limits.BodyDeadline).
"""
from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_BODY = b"request headers not received in time\n"
REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                   b"content-length: " + str(len(_BODY)).encode() + b"\r\nconnection: close\r\n\r\n" + _BODY)


class HeaderDeadlineH11(H11Protocol):
    header_timeout_s: float = 10.0  # set on the subclass header_deadline_protocol() makes

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request line and headers are in (or it is over)
            self._disarm()
        elif self.conn.trailing_data[0] and self._header_timer is None:  # a kept-alive connection's next request
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        self.logger.info("%s: request headers not received within %g s; closing the connection",
                         "%s:%d" % self.client if self.client else "a client", self.header_timeout_s)
        if self.conn.our_state is h11.IDLE:  # no answer under way: the client learns why
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()


def header_deadline_protocol(timeout_s: float) -> type[HeaderDeadlineH11]:
    """The protocol class to give uvicorn.Config(http=...): h11 with this header deadline."""
    return type("HeaderDeadlineH11", (HeaderDeadlineH11,), {"header_timeout_s": float(timeout_s)})
