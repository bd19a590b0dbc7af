"""A fake cloud metadata service (AWS IMDSv2/v1, Azure IMDS, GCP metadata) on 127.0.0.1.

It enforces what the real services enforce for user data (AWS session token when IMDSv2 is
required, `Metadata: true`, `Metadata-Flavor: Google`) and can answer the first user-data requests
with error statuses or other documents to exercise retries. Every request is recorded for assertions.
"""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

AWS_TOKEN_PATH = "/latest/api/token"
AWS_USER_DATA_PATH = "/latest/user-data"
AZURE_USER_DATA_PATH = "/metadata/instance/compute/userData"
AZURE_QUERY = "api-version=2021-01-01&format=text"
GCP_USER_DATA_PATH = "/computeMetadata/v1/instance/attributes/user-data"


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lowercased: HTTP header names are case-insensitive


@dataclass
class FakeImds:
    """State of the fake; mutate it between requests to change behaviour."""

    user_data: bytes = b""
    # Answers to the first user-data GETs, in order: an int is an error status, bytes are served
    # in place of `user_data`. Once drained, `user_data` is served.
    script: list[int | bytes] = field(default_factory=list)
    # Azure and GCP hand out base64 (as the adaptor stores it); False serves the raw bytes instead.
    base64_encoded: bool = True
    imdsv2_required: bool = True
    token_endpoint_enabled: bool = True
    issued_tokens: list[str] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def user_data_requests(self) -> list[RecordedRequest]:
        paths = (AWS_USER_DATA_PATH, AZURE_USER_DATA_PATH, GCP_USER_DATA_PATH)
        return [r for r in self.requests if r.path.split("?")[0] in paths]


def _handler(state: FakeImds) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def _reply(self, status: int, body: bytes = b"") -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _record(self) -> None:
            with state.lock:
                state.requests.append(
                    RecordedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                )

        def do_PUT(self) -> None:
            self._record()
            if self.path != AWS_TOKEN_PATH or not state.token_endpoint_enabled:
                self._reply(403 if self.path == AWS_TOKEN_PATH else 404)
                return
            ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                self._reply(400)
                return
            token = secrets.token_urlsafe(24)
            with state.lock:
                state.issued_tokens.append(token)
            self._reply(200, token.encode())

        def do_GET(self) -> None:
            self._record()
            path, _, query = self.path.partition("?")
            if path == AWS_USER_DATA_PATH:
                token = self.headers.get("X-aws-ec2-metadata-token")
                # A wrong token is refused even where IMDSv1 (no token) is allowed, as on EC2.
                accepted: list[str | None] = list(state.issued_tokens)
                if not state.imdsv2_required:
                    accepted.append(None)
                if token in accepted:
                    self._serve(encode=False)
                else:
                    self._reply(401)
            elif path == AZURE_USER_DATA_PATH and query == AZURE_QUERY:
                if self.headers.get("Metadata") != "true":
                    self._reply(400)
                else:
                    self._serve(encode=state.base64_encoded)
            elif path == GCP_USER_DATA_PATH and not query:
                if self.headers.get("Metadata-Flavor") != "Google":
                    self._reply(403)
                else:
                    self._serve(encode=state.base64_encoded)
            else:
                self._reply(404)

        def _serve(self, encode: bool) -> None:
            with state.lock:
                answer = state.script.pop(0) if state.script else state.user_data
            if isinstance(answer, int):
                self._reply(answer, b"not yet")
            else:
                self._reply(200, base64.b64encode(answer) if encode else answer)

    return Handler


@contextmanager
def serve_imds(state: FakeImds | None = None) -> Iterator[FakeImds]:
    """Run the fake on an ephemeral loopback port; `state.url` is its base URL."""
    state = state or FakeImds()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="fake-imds", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
