"""`providers.wire_parse`: the lean client's response parser reads what vendor servers send,
however the bytes are split or joined."""

from __future__ import annotations

import gzip
import zlib

import pytest

from providers.wire_parse import (
    MAX_HEAD,
    BadResponse,
    BodyCutShort,
    BodyTooLarge,
    ConnectionClosed,
    Reply,
    ResponseParser,
)

JSON = b'{"id":"chatcmpl-1","choices":[]}'
PLAIN = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-request-id: req-1\r\n"
    b"X-RateLimit-Limit-Requests: 500\r\nContent-Length: %d\r\n\r\n%s" % (len(JSON), JSON)
)
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;name=value\r\n" + JSON[:5] + b"\r\n"
    b"%x\r\n" % (len(JSON) - 5) + JSON[5:] + b"\r\n"
    b"0\r\nx-trailer: 1\r\nx-other: 2\r\n\r\n"
)


def read(data: bytes, head_only: bool = False, step: int = 0) -> Reply:
    """Feed `data` whole, or `step` bytes at a time; the one response it holds."""
    parser = ResponseParser()
    parser.expect(head_only)
    if not step:
        reply = parser.feed(data)
    else:
        reply = None
        for i in range(0, len(data), step):
            assert reply is None, "whole before its last byte"
            reply = parser.feed(data[i : i + step])
    assert reply is not None
    assert not parser.pending
    return reply


def test_a_content_length_response_with_case_insensitive_headers() -> None:
    reply = read(PLAIN)
    assert (reply.status, reply.body, reply.keep_alive) == (200, JSON, True)
    assert reply.headers["x-ratelimit-limit-requests"] == "500"
    assert reply.headers["X-Request-Id"] == "req-1"


@pytest.mark.parametrize("step", [1, 2, 7])
@pytest.mark.parametrize("data", [PLAIN, CHUNKED], ids=["length", "chunked"])
def test_any_split_of_the_bytes_reads_the_same(data: bytes, step: int) -> None:
    assert read(data, step=step).body == JSON


def test_chunked_bodies_drop_extensions_and_trailers() -> None:
    reply = read(CHUNKED)
    assert (reply.body, reply.keep_alive) == (JSON, True)
    assert "x-trailer" not in reply.headers


def test_chunked_without_trailers() -> None:
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert read(data).body == b"abc"


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some servers send it
    ],
    ids=["gzip", "deflate", "raw-deflate"],
)
def test_compressed_bodies_are_decoded(coding: str, encode: object) -> None:
    assert callable(encode)
    packed = encode(JSON)
    data = b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        coding.encode(),
        len(packed),
        packed,
    )
    assert read(data).body == JSON


def test_gzip_inside_chunks() -> None:
    packed = gzip.compress(JSON)
    data = (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(packed), packed)
    )
    assert read(data, step=3).body == JSON


def test_a_corrupt_gzip_body_is_cut_short() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nabcd"
    with pytest.raises(BodyCutShort):
        read(data)


def test_interim_1xx_answers_are_skipped() -> None:
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + PLAIN
    reply = read(data)
    assert (reply.status, reply.body) == (200, JSON)
    assert "link" not in reply.headers


@pytest.mark.parametrize(
    ("status", "head_only"), [(204, False), (304, False), (200, True)], ids=["204", "304", "HEAD"]
)
def test_no_body_after_head_or_for_204_and_304(status: int, head_only: bool) -> None:
    # The Content-Length is what a GET would have returned; these carry no body.
    data = b"HTTP/1.1 %d X\r\nContent-Length: 42\r\n\r\n" % status
    reply = read(data, head_only=head_only)
    assert (reply.status, reply.body, reply.keep_alive) == (status, b"", True)


def test_responses_arriving_together_are_read_one_by_one() -> None:
    parser = ResponseParser()
    parser.expect(False)
    first = parser.feed(PLAIN + CHUNKED + b"HTTP/1.1 204 No Content\r\n\r\n")
    assert first is not None and first.body == JSON
    assert parser.pending
    parser.expect(False)
    second = parser.next()
    assert second is not None and second.body == JSON
    parser.expect(False)
    third = parser.next()
    assert third is not None and third.status == 204
    assert not parser.pending


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
    ],
    ids=["close", "http/1.0", "http/1.0-keep-alive"],
)
def test_close_and_http_1_0_are_not_reused(head: bytes) -> None:
    reply = read(head)
    assert (reply.body, reply.keep_alive) == (b"ok", False)


def test_a_body_without_length_runs_to_the_close() -> None:
    parser = ResponseParser()
    parser.expect(False)
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\nsome ") is None
    assert parser.feed(b"text") is None
    reply = parser.eof()
    assert (reply.body, reply.keep_alive) == (b"some text", False)


def test_what_a_close_means_depends_on_what_arrived() -> None:
    nothing = ResponseParser()
    nothing.expect(False)
    with pytest.raises(ConnectionClosed):
        nothing.eof()
    half_head = ResponseParser()
    half_head.expect(False)
    half_head.feed(b"HTTP/1.1 200 OK\r\nContent-")
    with pytest.raises(BadResponse):
        half_head.eof()
    half_body = ResponseParser()
    half_body.expect(False)
    half_body.feed(PLAIN[:-3])
    with pytest.raises(BodyCutShort):
        half_body.eof()
    half_chunks = ResponseParser()
    half_chunks.expect(False)
    half_chunks.feed(CHUNKED[:-10])
    with pytest.raises(BodyCutShort):
        half_chunks.eof()


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n folded\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
)
def test_what_is_not_an_http_response_is_refused(data: bytes) -> None:
    parser = ResponseParser()
    parser.expect(False)
    with pytest.raises(BadResponse):
        parser.feed(data)


def test_a_bad_chunk_size_is_cut_short() -> None:
    parser = ResponseParser()
    parser.expect(False)
    with pytest.raises(BodyCutShort):
        parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")


def test_a_head_over_the_limit_is_refused_without_waiting_for_its_end() -> None:
    parser = ResponseParser()
    parser.expect(False)
    assert parser.feed(b"HTTP/1.1 200 OK\r\n") is None
    with pytest.raises(BadResponse, match="too long"):
        parser.feed(b"x-pad: " + b"a" * MAX_HEAD + b"\r\n")


def test_errors_never_quote_the_servers_bytes() -> None:
    parser = ResponseParser()
    parser.expect(False)
    with pytest.raises(BadResponse) as caught:
        parser.feed(b"HTTP/1.1 200 OK\r\nAuthorization Bearer sk-secret-key\r\n\r\n")
    assert "sk-secret" not in str(caught.value)


def limited(limit: int) -> ResponseParser:
    parser = ResponseParser()
    parser.expect(False, max_body=limit)
    return parser


def test_a_body_that_fits_its_limit_exactly_is_read() -> None:
    for data in (PLAIN, CHUNKED):
        reply = limited(len(JSON)).feed(data)
        assert reply is not None and reply.body == JSON


def test_a_content_length_past_the_limit_fails_at_the_head_before_any_body_byte() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 5000000000\r\n\r\n"
    with pytest.raises(BodyTooLarge, match="longer than 1048576 bytes"):
        limited(1 << 20).feed(head)


def test_chunks_fail_once_their_sizes_pass_the_limit() -> None:
    parser = limited(10)
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert parser.feed(head + b"6\r\nabcdef\r\n") is None  # 6 of 10
    with pytest.raises(BodyTooLarge):
        parser.feed(b"5\r\n")  # 11: known from the size line, before its data


def test_a_body_read_to_the_close_fails_as_it_passes_the_limit() -> None:
    parser = limited(10)
    assert parser.feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 10) is None
    with pytest.raises(BodyTooLarge):
        parser.feed(b"y")


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_compressed_body_that_decodes_past_the_limit_fails(coding: str) -> None:
    # ~10 KB of compressed zeros decode to 10 MiB: the limit applies to what is decoded.
    big = b"\0" * (10 << 20)
    packed = gzip.compress(big) if coding == "gzip" else zlib.compress(big)
    assert len(packed) < 20_000
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n" % (
        coding.encode(),
        len(packed),
    )
    with pytest.raises(BodyTooLarge):
        limited(1 << 20).feed(head + packed)
    fits = limited(10 << 20).feed(head + packed)
    assert fits is not None and fits.body == big


def test_each_response_has_its_own_limit() -> None:
    parser = limited(5)
    with pytest.raises(BodyTooLarge):
        parser.feed(PLAIN)
    parser = ResponseParser()  # a connection whose answer was too long is closed, not reused
    parser.expect(False, max_body=None)
    reply = parser.feed(PLAIN)
    assert reply is not None and reply.body == JSON
