"""A real Azurite blob server for tests: in memory, on a free port of 127.0.0.1.

Azurite comes from npm (``bash .ci/azurite.sh`` installs it); ``azurite-blob`` is looked for on
``PATH`` (``AISYNC_AZURITE_BLOB`` overrides). ``--skipApiVersionCheck`` is needed because
azure-storage-blob sends a newer API version than Azurite knows. The account is Azurite's
published development account (a well-known constant, not a secret).

    with running_azurite() as connection_string:
        ...
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator

from tests.backends.gcs_server import ServerProcess, emulator_missing

AZURITE_ENV = "AISYNC_AZURITE_BLOB"
AZURITE_INSTALL = "bash .ci/azurite.sh"  # npm install -g azurite

#: Azurite's documented development account (the same in every Azurite installation).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")


def connection_string(url: str) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={url};")


def find_azurite() -> str | None:
    override = os.environ.get(AZURITE_ENV)
    if override:
        return override if os.access(override, os.X_OK) else None
    return shutil.which("azurite-blob")


@contextlib.contextmanager
def running_azurite() -> Iterator[str]:
    """Start azurite-blob on 127.0.0.1 and a free port; yield its account URL
    (``http://127.0.0.1:PORT/devstoreaccount1``)."""
    binary = find_azurite()
    if binary is None:
        emulator_missing("Azurite (azurite-blob)", AZURITE_INSTALL)
    workdir = tempfile.mkdtemp(prefix="aisync-azurite-")  # whatever it writes stays in here

    def argv(port: int) -> list[str]:
        return [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port),
                "--inMemoryPersistence", "--silent", "--skipApiVersionCheck",
                "--disableTelemetry", "--loose"]

    server = ServerProcess("azurite", argv,
                           lambda port: f"http://127.0.0.1:{port}/{ACCOUNT}?comp=list",
                           cwd=workdir)
    try:
        port = server.start()
        yield f"http://127.0.0.1:{port}/{ACCOUNT}"
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
