"""HTTP request deadlines uvicorn lacks: slow (slowloris) clients are cut off.

uvicorn times out only idle keep-alive connections; a client that opens a connection and then
sends its headers, or its body, a byte at a time holds a connection (and, with enough of
them, the server) forever. This protocol, uvicorn's httptools protocol plus two deadlines,
gives each request `header_timeout` seconds from its first byte (or from the connection's
opening) to the end of its headers, then `body_timeout` seconds to the end of its body. A
request that misses one gets `408 Request Timeout` and its connection is closed; the app sees
a client that went away (counted, not an error).
"""

from __future__ import annotations

from collections.abc import Callable

REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 26\r\n"
    b"connection: close\r\n\r\n"
    b"request not sent in time\r\n"
)


def timed_http_protocol(
    header_timeout: float, body_timeout: float, on_timeout: Callable[[str], None]
) -> type:
    """An asyncio protocol class for uvicorn's `http=` setting with the two deadlines.

    Args:
        header_timeout: seconds to receive a request's headers.
        body_timeout: seconds to receive its body once the headers are in.
        on_timeout: called with "headers" or "body" when a deadline closes a connection.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class TimedHttpToolsProtocol(HttpToolsProtocol):
        _deadline = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm(header_timeout, "headers")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm(header_timeout, "headers")

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._arm(body_timeout, "body")

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self, seconds: float, phase: str) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expire, phase)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self, phase: str) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            on_timeout(phase)
            cycle = self.cycle
            if cycle is None or not cycle.response_started:
                self.transport.write(REQUEST_TIMEOUT)
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True  # the app's reads end, its answer goes nowhere
                cycle.message_event.set()
            self.transport.close()

    return TimedHttpToolsProtocol
