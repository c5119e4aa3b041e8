"""An HTTP/1.1 response parser for `providers.wire`: fed bytes as they arrive, it yields whole
responses (status, case-insensitive headers, decoded body).

What it reads (RFC 9112 §6.3, in that order): no body after a HEAD or for 1xx/204/304; 1xx
interim answers (100 Continue, 103 Early Hints) are skipped; `Transfer-Encoding: chunked`
(chunk extensions and trailers read and dropped); `Content-Length`; else the body runs to the
connection's close. `Content-Encoding` gzip and deflate are decoded once the body is whole,
as aiohttp's client does; other codings are left as sent. Bytes past a response stay buffered
for the next one, so responses that arrive together are read one by one.

A body longer than the request's `max_body` (as sent, and once decoded) raises `BodyTooLarge`
as soon as that is known: at the head when its Content-Length says so, else as the bytes or
the decoded output pass it. The caller closes the connection: the rest is never read.

Error messages never quote the server's bytes: a server may echo a request's headers (keys).
"""

from __future__ import annotations

import re
import zlib
from typing import NamedTuple

from multidict import CIMultiDict

#: Longest status line plus headers (aiohttp's client allows 8190 per line, ~100 lines).
MAX_HEAD = 65536
#: Longest chunk-size line (hex digits plus extensions) or trailer section.
MAX_LINE = 8190


class BadResponse(ConnectionError):
    """The server's bytes are not an HTTP/1.x response (a "connection failed" error)."""


class ConnectionClosed(ConnectionError):
    """The server closed the connection before this response's first byte."""


class BodyCutShort(Exception):
    """The head arrived but the body ended early or does not decode."""


class BodyTooLarge(Exception):
    """The body (as sent, or decoded) is longer than the caller allows (`max_body`)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"response body longer than {limit} bytes")
        self.limit = limit


class Reply(NamedTuple):
    """A whole response; `keep_alive` says whether the connection may carry another."""

    status: int
    headers: CIMultiDict[str]
    body: bytes
    keep_alive: bool


#: A header line at a line's start: RFC 9110 §5.1 token, colon, value without CR/LF and
#: without surrounding blanks. A line it does not match (obs-fold, no colon) fails the count
#: check in `_head`: one regex pass, ~4x cheaper than a Python loop over the lines.
_FIELDS = re.compile(
    r"^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*((?:[^\r\n]*[^\r\n \t])?)[ \t]*\r\n", re.MULTILINE
)

# Parser states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _TRAILERS, _TO_CLOSE = range(6)


class ResponseParser:
    """Reads responses to requests sent one at a time; `expect` before each, then `feed`."""

    __slots__ = (
        "_buf",
        "_head_only",
        "_headers",
        "_keep_alive",
        "_left",
        "_max",
        "_parts",
        "_read",
        "_received",
        "_state",
        "_status",
    )

    def __init__(self) -> None:
        self._buf = b""
        self._state = _HEAD
        self._head_only = False
        self._status = 0
        self._headers: CIMultiDict[str] = CIMultiDict()
        self._keep_alive = True
        self._left = 0
        self._parts: list[bytes] = []
        #: Whether any byte of the current response has arrived.
        self._received = False
        #: The current body's limit in bytes (None: none), and its bytes read so far past
        #: the part whose length was checked at once (a chunk's or Content-Length's).
        self._max: int | None = None
        self._read = 0

    @property
    def received(self) -> bool:
        """Whether any byte of the response being read has arrived."""
        return self._received

    @property
    def pending(self) -> bool:
        """Whether bytes beyond the last whole response are buffered."""
        return bool(self._buf)

    def expect(self, head_only: bool, max_body: int | None = None) -> None:
        """Start reading the response to the next request (`head_only`: it was a HEAD),
        whose body may be `max_body` bytes at most, as sent and decoded (None: any length)."""
        self._head_only = head_only
        self._state = _HEAD
        self._parts = []
        self._received = bool(self._buf)
        self._max = max_body
        self._read = 0

    def feed(self, data: bytes) -> Reply | None:
        """Take bytes; the response once it is whole (later bytes stay for the next)."""
        self._received = True
        self._buf = self._buf + data if self._buf else data
        return self.next()

    def next(self) -> Reply | None:
        """The next whole response in what is buffered, or None until more arrives."""
        while True:
            state = self._state
            buf = self._buf
            if state == _HEAD:
                end = _find(buf, b"\r\n\r\n", MAX_HEAD, BadResponse, "response head")
                if end < 0:
                    return None
                self._buf = buf[end + 4 :]
                self._head(buf[:end])
            elif state == _LENGTH:
                rest = self._take(buf)
                if rest is None:
                    return None
                self._buf = rest
                return self._done()
            elif state == _CHUNK_SIZE:
                end = _find(buf, b"\r\n", MAX_LINE, BodyCutShort, "chunk size line")
                if end < 0:
                    return None
                size = buf[:end].split(b";", 1)[0].strip()
                try:
                    if not size or size.startswith((b"-", b"+", b"0x", b"0X")):
                        raise ValueError
                    left = int(size, 16)
                except ValueError:
                    raise BodyCutShort("bad chunk size") from None
                self._buf = buf[end + 2 :]
                self._left = left
                self._grow(left)
                self._state = _CHUNK_DATA if left else _TRAILERS
            elif state == _CHUNK_DATA:
                rest = self._take(buf)
                if rest is None:
                    return None
                if len(rest) < 2:
                    self._buf = rest
                    return None
                if rest[:2] != b"\r\n":
                    raise BodyCutShort("chunk not followed by CRLF")
                self._buf = rest[2:]
                self._state = _CHUNK_SIZE
            elif state == _TRAILERS:
                if buf.startswith(b"\r\n"):
                    self._buf = buf[2:]
                    return self._done()
                end = _find(buf, b"\r\n\r\n", MAX_LINE, BodyCutShort, "trailer section")
                if end < 0:
                    return None
                self._buf = buf[end + 4 :]
                return self._done()
            else:  # _TO_CLOSE
                if buf:
                    self._grow(len(buf))
                    self._parts.append(buf)
                    self._buf = b""
                return None

    def _grow(self, n: int) -> None:
        """Count `n` more bytes of the body against its limit."""
        self._read += n
        if self._max is not None and self._read > self._max:
            raise BodyTooLarge(self._max)

    def _take(self, buf: bytes) -> bytes | None:
        """Move the body's next `_left` bytes from `buf` to its parts: the bytes after them
        once all have arrived, else None (kept as parts: a long body is not copied per read)."""
        left = self._left
        if len(buf) < left:
            if buf:
                self._parts.append(buf)
                self._left = left - len(buf)
                self._buf = b""
            return None
        if left:
            self._parts.append(buf[:left])
            self._left = 0
        return buf[left:]

    def eof(self) -> Reply:
        """The connection closed: the response if its body runs to the close, else why not."""
        if self._state == _TO_CLOSE:
            self.next()
            return self._done()
        if self._state == _HEAD:
            if self._received:
                raise BadResponse("server closed the connection inside the response head")
            raise ConnectionClosed("server closed the connection before answering")
        raise BodyCutShort("server closed the connection before the body's end")

    def _head(self, head: bytes) -> None:
        text = head.decode("latin-1")
        status_line, _, fields = text.partition("\r\n")
        if not status_line.startswith("HTTP/1.") or len(status_line) < 12:
            raise BadResponse("not an HTTP/1.x status line")
        code = status_line[9:12]
        if not code.isdigit() or code[0] == "0" or status_line[12:13] not in ("", " "):
            raise BadResponse("bad status line")
        status = int(code)
        pairs: list[tuple[str, str]] = []
        if fields:
            fields += "\r\n"
            pairs = _FIELDS.findall(fields)
            if len(pairs) != fields.count("\n"):
                raise BadResponse("bad header line")
        if status < 200:
            if status == 101:
                raise BadResponse("server switched protocols")
            self._received = bool(self._buf)
            return  # interim answer: the real one follows
        headers: CIMultiDict[str] = CIMultiDict(pairs)
        self._status = status
        self._headers = headers
        connection = headers.get("connection", "").lower()
        self._keep_alive = status_line[7] == "1" and "close" not in connection
        self._parts = []
        if self._head_only or status in (204, 304):
            self._left = 0
            self._state = _LENGTH
            return
        coding = headers.get("transfer-encoding")
        if coding is not None:
            if coding.lower().rsplit(",", 1)[-1].strip() == "chunked":
                self._state = _CHUNK_SIZE
                if "content-length" in headers:  # RFC 9112 §6.3: no reuse after such a reply
                    self._keep_alive = False
            else:
                self._to_close()
            return
        lengths = headers.getall("content-length", ())
        if len(lengths) == 1 and lengths[0].isdigit():
            self._left = int(lengths[0])
        elif not lengths:
            self._to_close()
            return
        else:  # repeats of one value are allowed (RFC 9110 §8.6)
            values = {v.strip() for length in lengths for v in length.split(",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise BadResponse("bad Content-Length")
            self._left = int(values.pop())
        self._grow(self._left)
        self._state = _LENGTH

    def _to_close(self) -> None:
        self._state = _TO_CLOSE
        self._keep_alive = False

    def _done(self) -> Reply:
        parts = self._parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._parts = []
        self._state = _HEAD
        self._received = bool(self._buf)
        headers = self._headers
        coding = headers.get("content-encoding")
        if coding is not None and body:
            body = _decoded(body, coding.strip().lower(), self._max)
        return Reply(self._status, headers, body, self._keep_alive)


def _find(buf: bytes, sep: bytes, limit: int, error: type[Exception], what: str) -> int:
    """Where `sep` starts in `buf` (-1: not yet); `error` when `what` passes `limit` bytes."""
    end = buf.find(sep)
    if end > limit or (end < 0 and len(buf) > limit):
        raise error(f"{what} too long")
    return end


def _decoded(body: bytes, coding: str, limit: int | None = None) -> bytes:
    """`body` decoded per its Content-Encoding, `limit` bytes at most (`BodyTooLarge` past
    them: a few kilobytes of gzip can hold gigabytes); other codings pass through."""
    try:
        if coding in ("gzip", "x-gzip"):
            return _whole(zlib.decompressobj(16 + zlib.MAX_WBITS), body, limit)
        if coding == "deflate":  # zlib-wrapped as the RFC says, or raw as some servers send
            try:
                return _whole(zlib.decompressobj(zlib.MAX_WBITS), body, limit)
            except zlib.error:
                return _whole(zlib.decompressobj(-zlib.MAX_WBITS), body, limit)
    except zlib.error as exc:
        raise BodyCutShort(f"cannot decode {coding} body: {exc}") from None
    return body


def _whole(decoder: zlib._Decompress, body: bytes, limit: int | None) -> bytes:
    if limit is None:
        out = decoder.decompress(body) + decoder.flush()
    else:  # one byte past the limit tells a body that is too long from one that fits
        out = decoder.decompress(body, limit + 1)
        if len(out) <= limit:
            out += decoder.flush()
        if len(out) > limit:
            raise BodyTooLarge(limit)
    if not decoder.eof:
        raise zlib.error("compressed body ends early")
    return out
