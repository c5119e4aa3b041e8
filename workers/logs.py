"""Logging set-up: plain or JSON lines, with batch/custom_id/endpoint when a record has them."""

from __future__ import annotations

import logging
import sys

import orjson

from schemas.settings import Settings

_CONTEXT = ("batch_id", "custom_id", "endpoint", "trace_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _CONTEXT:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def setup_logging(settings: Settings) -> None:
    """Configure the root logger once per process."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # dramatiq logs every worker thread start at info; keep it quiet unless debugging.
    if root.level > logging.DEBUG:
        logging.getLogger("dramatiq").setLevel(logging.WARNING)
