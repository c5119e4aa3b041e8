"""Token estimates before a call (TPM admission, context checks), reconciled afterwards with
the usage the provider reports. No tokenizer is downloaded: 4 characters a token, OpenAI's
tile rule for images, the JSON size of tools; audio by its length and PDFs by their pages,
never by the characters of their base64 (which would count a one-minute clip or a short PDF
as hundreds of thousands of tokens and fail it as too long for any context window)."""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import Any

import orjson

from schemas.request import LLMRequest

#: Characters a token of English prose, the estimate's one default.
CHARS_PER_TOKEN = 4
#: Output budget counted for a request that sets no limit of its own.
DEFAULT_OUTPUT_TOKENS = 512
#: An image whose size cannot be read cheaply is counted as 1024x1024 at high detail.
_DEFAULT_IMAGE = (1024, 1024)
#: Characters of a data URL decoded to find an image's size (headers are near the start).
_HEADER_CHARS = 65_536
#: Audio input tokens per second (OpenAI: one token per 100 ms of user audio).
AUDIO_TOKENS_PER_S = 10
#: Bytes per second assumed for compressed audio (32 kbit/s, low for speech): a bound from
#: above on its length. WAV says its own rate.
_AUDIO_BYTES_PER_S = 4_000
#: Tokens of one PDF page: its text and an image of it (Anthropic documents 1,500-3,000 text
#: tokens a page; OpenAI also reads each page's text and image).
PDF_PAGE_TOKENS = 3_000
#: Bytes of PDF per page assumed when the page objects cannot be counted (compressed object
#: streams): ~50 kB a page.
_PDF_BYTES_PER_PAGE = 48_000
_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![A-Za-z])")


def estimate_tokens(text: str, chars_per_token: int = CHARS_PER_TOKEN) -> int:
    """Rough token count of a text, rounded up, at least 1. Text that tokenizes densely (JSON
    full of digits) is counted with fewer characters a token where an overestimate is safer."""
    return max(1, -(-len(text) // chars_per_token))


def image_tokens(width: int, height: int, detail: str = "high") -> int:
    """OpenAI's rule: 85 at low detail; else 85 + 170 per 512 px tile of the image scaled to
    fit 2048x2048, then to 768 px on its shorter side."""
    if detail == "low":
        return 85
    scale = min(1.0, 2048 / max(width, height, 1))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / max(min(w, h), 1))
    w, h = w * scale, h * scale
    tiles = -(-int(w) // 512) * -(-int(h) // 512)
    return 85 + 170 * tiles


def image_size(url: str) -> tuple[int, int] | None:
    """Width and height of a PNG, GIF or JPEG data URL, read from its header; None otherwise."""
    if not url.startswith("data:"):
        return None
    _, _, data = url.partition(",")
    try:
        head = base64.b64decode(data[:_HEADER_CHARS] + "=" * (-len(data[:_HEADER_CHARS]) % 4))
    except (binascii.Error, ValueError):
        return None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        width, height = struct.unpack(">II", head[16:24])
        return int(width), int(height)
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        width, height = struct.unpack("<HH", head[6:10])
        return int(width), int(height)
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(head)
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        pos += 2 + length
    return None


def _part_tokens(part: Any) -> int:
    if not isinstance(part, dict):
        return 0
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text", "refusal"):
        text = part.get("text") or part.get("refusal")
        return estimate_tokens(text) if isinstance(text, str) else 0
    if kind in ("image_url", "input_image", "image"):
        source = part.get("image_url") or part.get("source") or part
        url = source.get("url") if isinstance(source, dict) else None
        if url is None and isinstance(source, dict) and source.get("type") == "base64":
            url = f"data:{source.get('media_type')};base64,{source.get('data', '')}"
        if url is None:
            url = part.get("image_url") if isinstance(part.get("image_url"), str) else ""
        detail = source.get("detail", "high") if isinstance(source, dict) else "high"
        size = image_size(url) if isinstance(url, str) else None
        width, height = size or _DEFAULT_IMAGE
        return image_tokens(width, height, detail or "high")
    if kind == "input_audio":
        audio = part.get("input_audio")
        if isinstance(audio, dict) and isinstance(audio.get("data"), str):
            return audio_tokens(_decode(audio["data"]), str(audio.get("format", "")))
    elif kind in ("file", "input_file", "document"):
        payload = _file_payload(part)
        if payload is not None:
            return file_tokens(payload)
    # Tool blocks, file ids, text documents: their JSON size.
    return estimate_tokens(orjson.dumps(part).decode())


def _decode(data: str) -> bytes:
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return data.encode()


def _file_payload(part: dict[str, Any]) -> bytes | None:
    """The decoded bytes of an inline file: OpenAI chat `file.file_data` and Responses
    `input_file.file_data` (data URLs), Anthropic `document.source` (base64)."""
    inner = part.get("file") if part.get("type") == "file" else part
    if not isinstance(inner, dict):
        return None
    source = inner.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        data = source.get("data")
    else:
        data = inner.get("file_data")
    if not isinstance(data, str) or not data:
        return None
    return _decode(data.partition(",")[2] if data.startswith("data:") else data)


def audio_tokens(audio: bytes, fmt: str = "") -> int:
    """Tokens of an audio clip by its length: WAV by the byte rate in its header, other
    formats at a low bit rate (so a long estimate, never a short one)."""
    rate, size = _AUDIO_BYTES_PER_S, len(audio)
    if audio[:4] == b"RIFF" and audio[8:12] == b"WAVE" and size >= 44:
        rate = struct.unpack("<I", audio[28:32])[0] or rate
        size -= 44  # the canonical header
    seconds = size / rate
    return max(1, int(seconds * AUDIO_TOKENS_PER_S + 0.999))


def file_tokens(data: bytes) -> int:
    """Tokens of an inline file: a PDF by its pages, anything else as text."""
    if not data.startswith(b"%PDF"):
        return max(1, (len(data) + 3) // 4)
    pages = len(_PDF_PAGE.findall(data)) or -(-len(data) // _PDF_BYTES_PER_PAGE)
    return pages * PDF_PAGE_TOKENS


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return estimate_tokens(content)
    if isinstance(content, list):
        return sum(_part_tokens(p) for p in content)
    return 0


def _inputs_tokens(value: Any) -> int:
    """`input` / `prompt` of embeddings, completions and moderations: texts or token arrays."""
    if isinstance(value, str):
        return estimate_tokens(value)
    if not isinstance(value, list) or not value:
        return 0
    if all(type(v) is int for v in value):
        return len(value)
    total = 0
    for item in value:
        if isinstance(item, str):
            total += estimate_tokens(item)
        elif isinstance(item, list):
            total += len(item)
        elif isinstance(item, dict):
            # A Responses input item is a message (its parts inside) or a part / call.
            total += _message_tokens(item) if "content" in item else _part_tokens(item)
    return total


def _message_tokens(msg: Any) -> int:
    if not isinstance(msg, dict):
        return 0
    tokens = _content_tokens(msg.get("content"))
    calls = msg.get("tool_calls")
    if calls:
        tokens += estimate_tokens(orjson.dumps(calls).decode())
    return tokens


def input_tokens(request: LLMRequest) -> int:
    """Estimated input tokens: text, images, tool definitions and embedding inputs."""
    body, kind = request.body, request.kind
    if kind in ("chat", "messages"):
        total = 0
        for msg in body.get("messages") or ():
            content = msg.get("content") if type(msg) is dict else None
            # Plain text turns are nearly every request: keep them one step.
            if type(content) is str and "tool_calls" not in msg:
                total += (len(content) + 3) // 4 or 1
            else:
                total += _message_tokens(msg)
        system = body.get("system")
        if system:
            total += _content_tokens(system)
    elif kind == "responses":
        total = _inputs_tokens(body.get("input")) + _content_tokens(body.get("instructions"))
    elif kind == "completions":
        total = _inputs_tokens(body.get("prompt"))
    else:
        total = _inputs_tokens(body.get("input"))
    tools = body.get("tools")
    if tools:
        total += estimate_tokens(orjson.dumps(tools).decode())
    return total


def output_budget(request: LLMRequest) -> int:
    """The most output tokens the request allows (0 for kinds that generate none)."""
    body, kind = request.body, request.kind
    if kind in ("embeddings", "moderations"):
        return 0
    if kind == "responses":
        limit = body.get("max_output_tokens")
    elif kind == "chat":
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
    else:
        limit = body.get("max_tokens")
    return limit if type(limit) is int and limit > 0 else DEFAULT_OUTPUT_TOKENS


def request_tokens(request: LLMRequest) -> int:
    """Input plus output budget: what a TPM limit charges up front, and what must fit the
    endpoint's context window."""
    return input_tokens(request) + output_budget(request)


def prompt_text(request: LLMRequest) -> str:
    """The request's text, for rules that pick a tier from the prompt."""
    body, kind = request.body, request.kind
    if kind in ("chat", "messages"):
        values: list[Any] = [m.get("content") for m in _messages(body)]
        values.append(body.get("system"))
    elif kind == "completions":
        values = [body.get("prompt")]
    else:
        values = [body.get("instructions"), body.get("input")]
    parts: list[str] = []
    for value in values:
        _texts(value, parts)
    return "\n".join(parts)


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return []
    return [m for m in messages if isinstance(m, dict)]


def _texts(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _texts(item, out)
    elif isinstance(value, dict):
        for key in ("text", "content"):
            if key in value:
                _texts(value[key], out)
