"""`workers.lean_aiohttp`: a worker imports aiohttp only when it makes a session, and then
without reading the CA certificates, and an https call still verifies the server against them
(#22). Each case runs in a fresh interpreter, since the effect is on what a process has
imported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from tests.conftest import ROOT
from tests.unit.test_lean_redis import _run

#: An https server on a free port with the certificate given, called by a default session of
#: the worker's aiohttp: prints the status, or the error's class.
CALL = """
import asyncio, ssl, sys
import workers.lean_aiohttp
import aiohttp
from aiohttp import web

async def main():
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(sys.argv[1], sys.argv[2])
    app = web.Application()
    app.router.add_get("/", lambda request: web.Response(text="hi"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=served)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{port}/") as response:
                print(response.status, await response.text())
    except aiohttp.ClientError as exc:
        print(type(exc).__name__)
    finally:
        await runner.cleanup()

asyncio.run(main())
"""


#: What a worker's `Executor._shared_session` runs before it imports aiohttp.
LEAN = "import ssl\nfrom workers.lean_aiohttp import import_aiohttp\nimport_aiohttp()\n"


def test_a_worker_does_not_import_aiohttp_until_it_makes_a_session() -> None:
    code = (
        "import sys, workers.process, workers.execute\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'))\n"
    )
    assert _run(code) == "[]"


def test_a_worker_imports_aiohttp_without_reading_ca_certificates() -> None:
    code = (
        LEAN + "import workers.process\n"
        "from aiohttp import connector\n"
        "for c in (connector._SSL_CONTEXT_VERIFIED, connector._SSL_CONTEXT_UNVERIFIED):\n"
        "    print(c.cert_store_stats()['x509_ca'])\n"
        "print('set_default_verify_paths' in vars(ssl.SSLContext))\n"
    )
    assert _run(code).splitlines() == ["0", "0", "False"]


def test_the_first_wrap_reads_them_as_the_import_would_have() -> None:
    code = (
        LEAN + "import workers.process\n"
        "from aiohttp import connector\n"
        "ctx = connector._SSL_CONTEXT_VERIFIED\n"
        "ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname='example.com')\n"
        "eager = ssl.create_default_context()\n"
        "print(ctx.cert_store_stats() == eager.cert_store_stats())\n"
        "print(ctx.cert_store_stats()['x509_ca'] > 0)\n"
    )
    assert _run(code).splitlines() == ["True", "True"]


def test_a_program_that_imported_aiohttp_first_is_left_as_it_was() -> None:
    code = (
        "import aiohttp, workers.lean_aiohttp\n"
        "from aiohttp import connector\n"
        "print(connector._SSL_CONTEXT_VERIFIED.cert_store_stats()['x509_ca'] > 0)\n"
    )
    assert _run(code) == "True"


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    names = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [*request, "-keyout", str(key), "-out", str(cert), *names],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def _call(cert: Path, key: Path, ca_file: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CALL, str(cert), str(key)],
        cwd=ROOT,
        env={**os.environ, "SSL_CERT_FILE": ca_file},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_an_https_call_verifies_the_server(certificate: tuple[Path, Path], tmp_path: Path) -> None:
    # Given a server whose certificate is the only CA (SSL_CERT_FILE), the call goes through;
    # given none (a file that does not exist), the same call is refused: verification is on.
    cert, key = certificate
    assert _call(cert, key, str(cert)) == "200 hi"
    assert _call(cert, key, str(tmp_path / "none.pem")) == "ClientConnectorCertificateError"


def test_an_adapter_makes_the_shared_session_at_its_first_use() -> None:
    """A worker's adapters get a session maker (`Provider.sessions`), not a session: it runs
    once, when an adapter first needs the session, and a session passed in is used as is."""
    from providers.registry import endpoint_options, provider_class
    from schemas.config import EndpointConfig

    cfg = EndpointConfig(provider="openai", base_url="http://127.0.0.1:9/v1", api_key="sk-x")
    cls = provider_class("openai")
    made: list[object] = []

    def sessions() -> Any:
        made.append(object())
        return made[-1]

    adapter = cls("e", cfg, endpoint_options("e", cfg))
    adapter.sessions = sessions
    assert made == []
    assert adapter.session is made[0] and adapter.session is made[0]
    assert len(made) == 1
    given = cls("e", cfg, endpoint_options("e", cfg), session=cast(Any, "given"))
    given.sessions = sessions
    assert given.session == "given" and len(made) == 1
