"""Redis key names of the HTTP gateway, all under `<namespace>:gw:`.

The batches themselves live under the keys of `workers.protocol.keys`; these only record who owns
what, uploaded files, and the validation phase that OpenAI-style batches go through first. The
gateway's scripts are `lua/rate_admit.lua` and `lua/move_phase.lua` (`scripts.Lua`).
"""

from __future__ import annotations

import re

#: What every id the gateway makes looks like (`file-…`, `batch_…`, `job_…`, output file ids):
#: an id from a request that does not is unknown, before it could name another Redis key
#: (`<file id>:data` is a file's content, `<batch id>:timeline` a list).
_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def valid_id(value: str) -> bool:
    """Whether `value` can be an id the gateway made."""
    return _ID.fullmatch(value) is not None


class GatewayKeys:
    """Key names of the gateway under one namespace."""

    def __init__(self, namespace: str = "batchyard") -> None:
        self.prefix = f"{namespace}:gw"
        #: Zset batch id -> lease expiry (epoch s) of batches being validated or submitted.
        self.ingesting = f"{self.prefix}:ingesting"

    def file(self, file_id: str) -> str:
        """Hash: owner, filename, bytes, lines, purpose, created_at, path of an uploaded file."""
        return f"{self.prefix}:file:{file_id}"

    def file_data(self, file_id: str) -> str:
        """String: the content of a small uploaded file (large ones are on disk)."""
        return f"{self.prefix}:file:{file_id}:data"

    def batch(self, batch_id: str) -> str:
        """Hash: owner, kind (batch|job), phase, input file, endpoint, window, errors."""
        return f"{self.prefix}:batch:{batch_id}"

    def owner_batches(self, owner: str) -> str:
        """Zset batch id -> created_at of one owner's OpenAI-style batches, for listing."""
        return f"{self.prefix}:owner:{owner}:batches"

    def owner_files(self, owner: str) -> str:
        """Zset file id -> created_at of one owner's uploaded files, for listing."""
        return f"{self.prefix}:owner:{owner}:files"

    def seen(self, batch_id: str) -> str:
        """Set of custom_ids met while validating a file: duplicates without gateway memory."""
        return f"{self.prefix}:batch:{batch_id}:seen"

    def session(self, digest: str) -> str:
        """Hash: key name, csrf token, created_at of a dashboard session, under the sha256 of
        its cookie value (a Redis dump holds no usable session id)."""
        return f"{self.prefix}:session:{digest}"

    def timeline(self, batch_id: str) -> str:
        """List of `epoch_s:done` samples of a batch's progress, newest first, for its chart."""
        return f"{self.prefix}:batch:{batch_id}:timeline"

    def rate(self, key_name: str) -> str:
        """String: the GCRA theoretical arrival time (epoch ms) of one API key's requests."""
        return f"{self.prefix}:rate:{key_name}"
