"""A local managed-identity token endpoint, as App Service style hosts offer one (IDENTITY_ENDPOINT).

azure-identity's DefaultAzureCredential uses it when IDENTITY_ENDPOINT and IDENTITY_HEADER are set:
a real adaptor process can then get a token for the fake ARM (tests/fakes/arm.py) without any
traffic leaving loopback and without a client secret, as with a node's managed identity.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class FakeManagedIdentity:
    def __init__(self) -> None:
        self.header = secrets.token_hex(8)
        self.requests = 0
        identity = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                if self.headers.get("X-IDENTITY-HEADER") != identity.header or "resource" not in query:
                    self._answer(400, {"error": "invalid_request"})
                    return
                identity.requests += 1
                self._answer(
                    200,
                    {
                        "access_token": "fake-managed-identity-token",
                        "expires_on": str(int(time.time()) + 3600),
                        "resource": query["resource"][0],
                        "token_type": "Bearer",
                    },
                )

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def environment(self) -> dict[str, str]:
        """What the host sets for processes that may use its identity."""
        host, port = self._server.server_address[:2]
        return {"IDENTITY_ENDPOINT": f"http://{host!s}:{port}/msi/token", "IDENTITY_HEADER": self.header}

    def __enter__(self) -> FakeManagedIdentity:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
