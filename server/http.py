"""The HTTP protocol `atlascope serve` runs: uvicorn's httptools protocol with the request's head capped.

httptools caps a request's URL (one longer than 64 KiB is answered 400), but not its headers: a 1 MB header was read,
buffered and handed to the app. Here a head (request line and headers) still incomplete after ``MAX_HEAD_BYTES`` more
than the read that began it is answered 431. The read that begins a request is not counted because where in it the
request begins is not known; a read is at most a few hundred KiB.

The answer is followed by the end of our half of the connection, and what the client still sends is read and dropped
until it closes (at most ``LINGER_S``): closing a socket with unread bytes in it resets the connection, and a reset
can reach the client before the 431 does, which would then never be read.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD_BYTES = 64 * 1024  # as much as a URL may be: browsers send a few KiB
LINGER_S = 10  # how long the rest of a refused request is read and dropped
TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
             b"content-length: %d\r\nconnection: close\r\n\r\n%s")
MESSAGE = b"request headers too large: at most %d KiB" % (MAX_HEAD_BYTES // 1024)


class CappedHeadProtocol(HttpToolsProtocol):
    head_open = False  # a request has begun and its headers are not complete
    began_here = False  # ... and it began in the read being parsed
    head_bytes = 0  # bytes read for the open head after the read that began it
    refused = False  # the 431 is sent: what arrives is dropped

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_open, self.began_here, self.head_bytes = True, True, 0

    def on_headers_complete(self) -> None:
        self.head_open = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self.began_here = False
        super().data_received(data)
        if self.head_open and not self.began_here and not self.transport.is_closing():
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self.refuse()

    def refuse(self) -> None:
        """Answer 431 and end our half of the connection; the client's end (or ``LINGER_S``) closes it."""
        self.refused = True
        self.transport.write(TOO_LARGE % (len(MESSAGE), MESSAGE))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)
