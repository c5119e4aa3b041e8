"""Token estimates before a call, and what a request needs from an endpoint."""

from __future__ import annotations

import base64
import struct
import zlib

import orjson
import pytest
from pydantic import ValidationError

from providers.base import ALL_FEATURES, Capabilities
from schemas.features import needs
from schemas.request import LLMRequest
from schemas.tokens import (
    DEFAULT_OUTPUT_TOKENS,
    PDF_PAGE_TOKENS,
    estimate_tokens,
    image_size,
    image_tokens,
    input_tokens,
    output_budget,
    prompt_text,
    request_tokens,
)


def png(width: int, height: int) -> str:
    """A data URL of a PNG header of the given size (enough for a size reader)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )
    return "data:image/png;base64," + base64.b64encode(data).decode()


def chat(*messages: dict[str, object], **body: object) -> LLMRequest:
    return LLMRequest.chat("c", messages, **body)


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [
        ((1024, 1024), "high", 765),  # 768x768: 4 tiles, OpenAI's own example
        ((2048, 4096), "high", 1105),  # 1024x2048 -> 768x1536: 6 tiles
        ((4096, 8192), "low", 85),
        ((100, 100), "high", 255),  # one tile
    ],
)
def test_openai_tile_rule(size: tuple[int, int], detail: str, tokens: int) -> None:
    assert image_tokens(*size, detail) == tokens


def test_image_sizes_are_read_from_data_url_headers() -> None:
    assert image_size(png(640, 480)) == (640, 480)
    gif = (
        "data:image/gif;base64," + base64.b64encode(b"GIF89a" + struct.pack("<HH", 32, 16)).decode()
    )
    assert image_size(gif) == (32, 16)
    assert image_size("https://example.com/x.png") is None


def test_one_estimate_rounds_up_at_four_characters_unless_told_fewer() -> None:
    assert [estimate_tokens(t) for t in ("", "x", "x" * 4, "x" * 5)] == [1, 1, 1, 2]
    # Dense text (JSON full of digits) is counted pessimistically where overflow would fail.
    assert estimate_tokens("x" * 30, chars_per_token=3) == 10
    assert estimate_tokens("x" * 31, chars_per_token=3) == 11


def test_inputs_count_text_images_tools_and_every_embedding_input() -> None:
    text = chat({"role": "user", "content": "x" * 40})
    assert input_tokens(text) == 10
    picture = chat(
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "x" * 40},
                {"type": "image_url", "image_url": {"url": png(100, 100)}},
                {"type": "image_url", "image_url": {"url": "https://e/x.png", "detail": "low"}},
            ],
        }
    )
    assert input_tokens(picture) == 10 + 255 + 85
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with_tools = chat({"role": "user", "content": "x" * 40}, tools=tools)
    assert input_tokens(with_tools) == 10 + estimate_tokens(orjson.dumps(tools).decode())
    many = LLMRequest(custom_id="e", kind="embeddings", body={"input": ["x" * 8] * 10})
    assert input_tokens(many) == 20
    ids = LLMRequest(custom_id="e", kind="embeddings", body={"input": [[1, 2, 3], [4]]})
    assert input_tokens(ids) == 4


def wav(seconds: int, rate: int = 16_000) -> bytes:
    """A mono 16-bit PCM WAV of silence."""
    data = b"\0" * (seconds * rate * 2)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def pdf(pages: int) -> bytes:
    """A PDF skeleton with `pages` page objects under one page tree."""
    objects = [b"1 0 obj << /Type /Pages /Count %d >> endobj" % pages]
    objects += [b"%d 0 obj << /Type /Page /Parent 1 0 R >> endobj" % (i + 2) for i in range(pages)]
    return b"%PDF-1.7\n" + b"\n".join(objects) + b"\n%%EOF"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_audio_counts_its_length_and_pdfs_their_pages_not_their_base64() -> None:
    # A minute of speech is ~600 tokens, not the 640,000 its base64 would count as text:
    # estimated that way, every such line failed as too long for any context window.
    clip = {"type": "input_audio", "input_audio": {"data": b64(wav(60)), "format": "wav"}}
    heard = chat({"role": "user", "content": [{"type": "text", "text": "x" * 40}, clip]})
    assert input_tokens(heard) == 10 + 600
    mp3 = {"type": "input_audio", "input_audio": {"data": b64(b"\xff" * 40_000), "format": "mp3"}}
    assert input_tokens(chat({"role": "user", "content": [mp3]})) == 100  # 10 s at 32 kbit/s
    # PDFs by their pages: chat `file`, Responses `input_file`, Anthropic `document`.
    three = "data:application/pdf;base64," + b64(pdf(3))
    chat_file = {"type": "file", "file": {"filename": "a.pdf", "file_data": three}}
    assert input_tokens(chat({"role": "user", "content": [chat_file]})) == 3 * PDF_PAGE_TOKENS
    responses = LLMRequest(
        custom_id="r",
        kind="responses",
        body={
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_file", "filename": "a.pdf", "file_data": three},
                        {"type": "input_image", "image_url": png(1024, 1024)},
                        {"type": "input_text", "text": "x" * 40},
                    ],
                }
            ]
        },
    )
    assert input_tokens(responses) == 3 * PDF_PAGE_TOKENS + 765 + 10
    source = {"type": "base64", "media_type": "application/pdf", "data": b64(pdf(2))}
    document = {"type": "document", "source": source}
    messages = LLMRequest(
        custom_id="m", kind="messages", body={"messages": [{"role": "user", "content": [document]}]}
    )
    assert input_tokens(messages) == 2 * PDF_PAGE_TOKENS
    # Page objects hidden in compressed streams: ~50 kB a page.
    packed = "data:application/pdf;base64," + b64(b"%PDF-1.7\n" + b"\0" * 100_000)
    hidden = {"type": "file", "file": {"file_data": packed}}
    assert input_tokens(chat({"role": "user", "content": [hidden]})) == 3 * PDF_PAGE_TOKENS


def test_one_default_output_budget_and_none_for_embeddings() -> None:
    plain = chat({"role": "user", "content": "hi"})
    assert output_budget(plain) == DEFAULT_OUTPUT_TOKENS
    assert request_tokens(plain) == 1 + DEFAULT_OUTPUT_TOKENS
    assert output_budget(chat({"role": "user", "content": "hi"}, max_completion_tokens=9)) == 9
    assert output_budget(chat({"role": "user", "content": "hi"}, max_tokens=7)) == 7
    responses = LLMRequest(
        custom_id="r", kind="responses", body={"input": "x", "max_output_tokens": 5}
    )
    assert output_budget(responses) == 5
    embeddings = LLMRequest(custom_id="e", kind="embeddings", body={"input": "abcd"})
    assert request_tokens(embeddings) == 1


def test_prompt_text_reads_every_kind() -> None:
    assert (
        prompt_text(chat({"role": "system", "content": "s"}, {"role": "user", "content": "u"}))
        == "s\nu"
    )
    responses = LLMRequest(
        custom_id="r",
        kind="responses",
        body={
            "instructions": "i",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "t"}]}],
        },
    )
    assert prompt_text(responses) == "i\nt"


def test_needs_and_the_capabilities_that_serve_them() -> None:
    plain = chat({"role": "user", "content": "hi"})
    assert needs(plain) == frozenset()
    picture = chat({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]})
    assert needs(picture) == {"images"}
    json_tools = chat(
        {"role": "user", "content": "x"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "1", "content": "ok"},
        response_format={"type": "json_schema", "json_schema": {}},
    )
    assert needs(json_tools) == {"tools", "json_schema"}
    text_only = Capabilities(kinds=frozenset({"chat"}))
    assert text_only.missing(plain) == []
    assert text_only.missing(json_tools) == ["response_format json_schema", "tools"]
    embeddings = LLMRequest(custom_id="e", kind="embeddings", body={"input": "x"})
    assert text_only.missing(embeddings) == ["embeddings requests"]
    tools_only = Capabilities(features=frozenset({"tools"}))
    assert tools_only.missing(json_tools) == ["response_format json_schema"]
    assert Capabilities(features=ALL_FEATURES).missing(json_tools) == []
    assert Capabilities(features=ALL_FEATURES).missing(embeddings) == ["embeddings requests"]
    # An adapter still declaring the earlier flags fails at import, not silently.
    with pytest.raises(ValidationError, match="images"):
        Capabilities(images=True)  # type: ignore[call-arg]
