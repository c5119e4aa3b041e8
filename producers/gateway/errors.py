"""Every error leaves the gateway in OpenAI's shape: {"error": {message, type, param, code}}."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
import redis
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

log = logging.getLogger("batchyard.gateway")

INVALID = "invalid_request_error"


class ApiError(Exception):
    """An HTTP error the client should see, with OpenAI's error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body of the response."""
        error = {"message": self.message, "type": self.type, "param": self.param}
        return {"error": {**error, "code": self.code}}

    def response(self) -> web.Response:
        """The whole response."""
        return web.json_response(self.body(), status=self.status, headers=self.headers)


def not_found(kind: str, object_id: str) -> ApiError:
    """404 for unknown ids and for other keys' objects alike: their existence is not leaked."""
    return ApiError(404, f"No {kind} found with id '{object_id}'.")


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """400 naming the offending parameter."""
    return ApiError(400, message, param=param, code=code)


_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
}


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn ApiError, aiohttp's own HTTP errors and crashes into OpenAI-shaped JSON."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text or exc.reason
        if exc.status == 413:
            message = "Request body too large."
        error = ApiError(exc.status, message, code=_HTTP_CODES.get(exc.status))
        return error.response()
    except ConnectionResetError:  # the client left; nobody to answer
        raise
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        log.warning("Redis unavailable in %s %s: %s", request.method, request.path, exc)
        unavailable = ApiError(
            503,
            "The queue backend is unavailable; retry shortly.",
            type="server_error",
            code="backend_unavailable",
            headers={"Retry-After": "5"},
        )
        return unavailable.response()
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return ApiError(500, "Internal server error.", type="server_error").response()


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body, else 400 (413 past the app's body size limit)."""
    try:
        body = await request.json(loads=orjson.loads)
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        raise bad_request("The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise bad_request("The body must be a JSON object.")
    return body


def invalid(exc: ValidationError, prefix: str = "") -> ApiError:
    """400 for the first problem pydantic found, naming the field as `param`."""
    err = exc.errors()[0]
    param = prefix + ".".join(str(p) for p in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    return bad_request(f"{param}: {message}" if param else message, param=param or None)


def list_page(data: list[dict[str, Any]], has_more: bool) -> web.Response:
    """An OpenAI list object (`files.list`, `batches.list`): a page and how to go on."""
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
    )
