"""The peer-pods webhook without an API server: upstream's unit cases as data, and the HTTPS endpoint."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import os
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
import yaml

from cluster.quantity import QuantityError, mebibytes, parse, value
from cluster.webhook.cli import WORKER_STREAMS, default_workers
from cluster.webhook.h2 import DATA, GOAWAY, HEADERS, PING, PREFACE, frame
from cluster.webhook.mutate import (
    CPU_ANNOTATION,
    GPU_ANNOTATION,
    MEMORY_ANNOTATION,
    MutationSettings,
    PodError,
    mutation,
)
from cluster.webhook.server import MAX_REVIEW_BYTES, CertificateError, ServingCertificate, serving
from tests.k8s.cluster import free_port
from tests.k8s.pki import ClusterCA

CASES = yaml.safe_load((Path(__file__).with_name("webhook_cases.yaml")).read_text())
PREFIX = "io.katacontainers.config.hypervisor."
SETTINGS = MutationSettings()


def apply_patch(document: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add/remove, all this webhook emits, so the tests look at the mutated pod as upstream's do."""
    result = copy.deepcopy(document)
    for op in patch:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node: Any = result
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] == "add":
            node[last] = op["value"]
        else:
            assert op["op"] == "remove"
            del node[last]
    return result


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_upstream_unit_case(case: dict[str, Any]) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": case["spec"]}
    mutated = apply_patch(pod, mutation(pod, SETTINGS))
    sizing = {
        key.removeprefix(PREFIX): text
        for key, text in (mutated["metadata"].get("annotations") or {}).items()
        if key.startswith(PREFIX)
    }
    assert sizing == case["annotations"]
    containers = mutated["spec"]["containers"]
    if case.get("cleared", True):
        one = {"kata.peerpods.io/vm": "1"}
        assert containers[0]["resources"] == {"requests": one, "limits": one}
        assert all(not c.get("resources") for c in containers[1:])
        assert all(not c.get("resources") for c in mutated["spec"].get("initContainers", []))
    else:
        assert mutated == pod


def test_existing_annotations_are_kept_and_extended_resource_is_configurable() -> None:
    pod = {
        "metadata": {"annotations": {"a/b": "keep"}},
        "spec": {
            "runtimeClassName": "rc",
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}],
        },
    }
    mutated = apply_patch(pod, mutation(pod, MutationSettings("rc", "example.com/vm")))
    assert mutated["metadata"]["annotations"] == {"a/b": "keep", CPU_ANNOTATION: "1"}
    assert mutated["spec"]["containers"][0]["resources"]["limits"] == {"example.com/vm": "1"}


def test_reinvocation_changes_nothing_more() -> None:
    """reinvocationPolicy IfNeeded: a second pass over the mutated pod keeps the sizing."""
    pod = {"spec": {"runtimeClassName": "kata-remote", "containers": [CASES[0]["spec"]["containers"][0]]}}
    once = apply_patch(pod, mutation(pod, SETTINGS))
    assert apply_patch(once, mutation(once, SETTINGS)) == once


def test_settings_from_upstream_environment_names() -> None:
    env = {"TARGET_RUNTIMECLASS": "x", "POD_VM_EXTENDED_RESOURCE": "y/z"}
    assert MutationSettings.from_env(env) == MutationSettings("x", "y/z")
    assert MutationSettings.from_env({"TARGET_RUNTIMECLASS": ""}) == MutationSettings()


@pytest.mark.parametrize(
    ("text", "exact"),
    [("500m", Fraction(1, 2)), ("0.7", Fraction(7, 10)), ("4Gi", 4 * 2**30), ("1e3", 1000), ("1.5k", 1500),
     ("100n", Fraction(1, 10**7)), ("+2", 2), (".5", Fraction(1, 2))],
)  # fmt: skip
def test_quantities(text: str, exact: Fraction) -> None:
    assert parse(text) == exact


@pytest.mark.parametrize("text", ["", "1.2.3", "4GB", "Gi", "1e99999", "x" * 100, "1 Gi"])
def test_bad_quantities(text: str) -> None:
    with pytest.raises(QuantityError):
        parse(text)


def test_rounding_as_upstream() -> None:
    assert value(parse("1200m")) == 2
    assert mebibytes(parse("1")) == 1
    assert mebibytes(parse("4Gi")) == 4096


@pytest.mark.parametrize(
    "spec",
    [{"runtimeClassName": "kata-remote", "containers": []},
     {"runtimeClassName": "kata-remote", "containers": "x"},
     {"runtimeClassName": "kata-remote", "containers": [{"resources": {"requests": {"cpu": "lots"}}}]},
     {"runtimeClassName": "kata-remote", "containers": [{"resources": {"limits": {"memory": ["1"]}}}]},
     {"runtimeClassName": "kata-remote", "containers": [{"resources": []}]}],
)  # fmt: skip
def test_bad_pods_are_typed_errors(spec: dict[str, Any]) -> None:
    with pytest.raises(PodError):
        mutation({"spec": spec}, SETTINGS)


# The HTTPS endpoint


@pytest.fixture
def ca() -> ClusterCA:
    return ClusterCA.create()


def _review(obj: object, uid: str = "u-1") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": uid, "object": obj},
    }


async def test_admission_over_https(tmp_path: Path, ca: ClusterCA) -> None:
    certs = ca.write_pair(tmp_path / "certs", "peer-pods-webhook-webhook-service", ["127.0.0.1"])
    client_tls = ssl.create_default_context(cadata=ca.pem.decode())
    pod = {"kind": "Pod", "metadata": {}, "spec": CASES[0]["spec"]}
    async with (
        serving(SETTINGS, ServingCertificate(certs), "127.0.0.1", 0, "127.0.0.1", 0) as (port, probe),
        aiohttp.ClientSession() as http,
    ):
        url = f"https://127.0.0.1:{port}/mutate-v1-pod"
        async with http.post(url, json=_review(pod), ssl=client_tls) as reply:
            assert reply.status == 200
            answer = await reply.json()
        response = answer["response"]
        assert answer["kind"] == "AdmissionReview" and answer["apiVersion"] == "admission.k8s.io/v1"
        assert (
            response["uid"] == "u-1" and response["allowed"] is True and response["patchType"] == "JSONPatch"
        )
        mutated = apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
        assert mutated["metadata"]["annotations"] == {CPU_ANNOTATION: "3", MEMORY_ANNOTATION: "5120"}
        assert GPU_ANNOTATION not in mutated["metadata"]["annotations"]

        other = {"kind": "Pod", "spec": {"containers": [{"name": "c"}]}}
        async with http.post(url, json=_review(other), ssl=client_tls) as reply:
            assert (await reply.json())["response"] == {"uid": "u-1", "allowed": True}

        bad = {"kind": "Pod", "spec": {"runtimeClassName": "kata-remote", "containers": []}}
        async with http.post(url, json=_review(bad), ssl=client_tls) as reply:
            refused = (await reply.json())["response"]
        assert refused["allowed"] is False and refused["status"] == {
            "code": 400,
            "message": "the pod has no containers",
        }

        for body in (b"not json", b"[" * 100_000, json.dumps({"kind": "AdmissionReview"}).encode()):
            async with http.post(url, data=body, ssl=client_tls) as reply:
                assert reply.status == 400

        async with http.get(f"http://127.0.0.1:{probe}/healthz") as reply:
            assert reply.status == 200


async def test_renewed_certificate_is_served_without_restart(tmp_path: Path, ca: ClusterCA) -> None:
    certs = ca.write_pair(tmp_path / "certs", "first", ["127.0.0.1"])
    certificate = ServingCertificate(certs)
    async with serving(SETTINGS, certificate, "127.0.0.1", 0, "127.0.0.1", 0) as (port, _):
        assert await _served_name(port, ca) == "first"
        ca.write_pair(certs, "second", ["127.0.0.1"])
        assert certificate.reload()
        assert await _served_name(port, ca) == "second"


async def _served_name(port: int, ca: ClusterCA) -> str:
    context = ssl.create_default_context(cadata=ca.pem.decode())
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    peer = writer.get_extra_info("peercert")
    writer.close()
    return str(dict(x[0] for x in peer["subject"])["commonName"])


def test_unusable_certificate_or_profile(tmp_path: Path, ca: ClusterCA) -> None:
    with pytest.raises(CertificateError, match="cannot read"):
        ServingCertificate(tmp_path)
    certs = ca.write_pair(tmp_path / "c", "x", ["127.0.0.1"])
    (certs / "tls.key").write_text("junk")
    with pytest.raises(CertificateError, match="cannot load"):
        ServingCertificate(certs)
    with pytest.raises(CertificateError, match="VersionTLS13"):
        ServingCertificate(certs, "VersionTLS13", ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"])


class H2Client:
    """An HTTP/2 client connection (the h2 package) to the webhook, as the API server's (ALPN h2)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.statuses: dict[int, int] = {}
        self.bodies: dict[int, bytes] = {}
        self.ended: set[int] = set()
        self.events: list[h2.events.Event] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, port: int, ca: ClusterCA) -> AsyncIterator[H2Client]:
        context = ssl.create_default_context(cadata=ca.pem.decode())
        context.set_alpn_protocols(["h2"])
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        try:
            yield cls(reader, writer)
        finally:
            writer.close()

    def request(self, path: str, body: bytes, **headers: str) -> int:
        stream = self.conn.get_next_available_stream_id()
        fields = [(":method", "POST"), (":path", path), (":scheme", "https"), (":authority", "127.0.0.1"),
                  ("content-type", "application/json"), *headers.items()]  # fmt: skip
        self.conn.send_headers(stream, fields)
        self.conn.send_data(stream, body, end_stream=True, pad_length=7)
        return stream

    async def until(self, done: Callable[[], bool]) -> None:
        """Exchange frames until `done()`; EOF from the server fails the test."""
        async with asyncio.timeout(10):
            while True:
                self.writer.write(self.conn.data_to_send())
                if done():
                    return
                data = await self.reader.read(65536)
                assert data, "the server closed the connection"
                for event in self.conn.receive_data(data):
                    self.events.append(event)
                    if isinstance(event, h2.events.ResponseReceived):
                        self.statuses[event.stream_id] = int(dict(event.headers)[b":status"])
                    elif isinstance(event, h2.events.DataReceived):
                        self.bodies[event.stream_id] = self.bodies.get(event.stream_id, b"") + event.data
                        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        self.ended.add(event.stream_id)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        stream = self.request(path, body)
        await self.until(lambda: stream in self.ended)
        return self.statuses[stream], self.bodies.get(stream, b"")


async def h2_post(port: int, ca: ClusterCA, path: str, body: bytes) -> tuple[int, bytes]:
    """One request over HTTP/2 on a connection of its own."""
    async with H2Client.connect(port, ca) as client:
        return await client.post(path, body)


async def test_admission_over_http2(tmp_path: Path, ca: ClusterCA) -> None:
    certs = ca.write_pair(tmp_path / "certs", "webhook", ["127.0.0.1"])
    pod = {"kind": "Pod", "metadata": {}, "spec": CASES[0]["spec"]}
    async with serving(SETTINGS, ServingCertificate(certs), "127.0.0.1", 0, "127.0.0.1", 0) as (port, _):
        status, body = await h2_post(port, ca, "/mutate-v1-pod", json.dumps(_review(pod)).encode())
        response = json.loads(body)["response"]
        assert status == 200 and response["patchType"] == "JSONPatch"
        mutated = apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
        assert mutated["metadata"]["annotations"] == {CPU_ANNOTATION: "3", MEMORY_ANNOTATION: "5120"}
        assert (await h2_post(port, ca, "/other", b"{}"))[0] == 404
        assert (await h2_post(port, ca, "/mutate-v1-pod", b"[["))[0] == 400


@contextlib.asynccontextmanager
async def webhook_command(
    tmp_path: Path, ca: ClusterCA, *extra: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """`peerpods-webhook` as deployed (uvloop), until it serves; yields (process, webhook port)."""
    certs = ca.write_pair(tmp_path / "certs", "webhook", ["127.0.0.1"])
    port, probe = free_port(), free_port()
    binary = Path(sys.executable).with_name("peerpods-webhook")
    with (tmp_path / "log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            str(binary), "--cert-dir", str(certs), f"--webhook-bind-address=127.0.0.1:{port}",
            f"--health-probe-bind-address=127.0.0.1:{probe}", *extra, stderr=log,
        )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(30):
            while True:  # until it serves
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{probe}/healthz") as reply:
                        if reply.status == 200:
                            break
                await asyncio.sleep(0.1)
        yield process, port
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
    assert "Traceback" not in (tmp_path / "log").read_text()


async def test_the_command_serves_http2_and_http1(tmp_path: Path, ca: ClusterCA) -> None:
    """uvloop's transports are not asyncio's classes."""
    pod = {"kind": "Pod", "metadata": {}, "spec": CASES[1]["spec"]}
    async with webhook_command(tmp_path, ca, "--workers=1") as (process, port):
        status, body = await h2_post(port, ca, "/mutate-v1-pod", json.dumps(_review(pod)).encode())
        assert status == 200 and json.loads(body)["response"]["patchType"] == "JSONPatch"
        client_tls = ssl.create_default_context(cadata=ca.pem.decode())
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"https://127.0.0.1:{port}/mutate-v1-pod", json=_review(pod), ssl=client_tls) as reply,
        ):
            assert reply.status == 200 and (await reply.json())["response"]["allowed"] is True
        assert process.returncode is None


def _children(pid: int) -> set[int]:
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


async def test_workers_share_the_port_and_end_together(tmp_path: Path, ca: ClusterCA) -> None:
    """--workers 3: three processes answer on one port, each connection allows a few streams (the
    API server opens more connections, which the kernel spreads); one worker killed ends them all,
    so that the pod restarts whole instead of serving at a fraction."""
    async with webhook_command(tmp_path, ca, "--workers=3") as (process, port):
        workers = {child for child in _children(process.pid) if b"spawn_main" in
                   Path(f"/proc/{child}/cmdline").read_bytes()}  # fmt: skip
        assert len(workers) == 3
        async with H2Client.connect(port, ca) as client:
            await client.until(lambda: client.conn.remote_settings.max_concurrent_streams == WORKER_STREAMS)
            for _ in range(3):
                assert (await client.post("/mutate-v1-pod", _pod_review()))[0] == 200
        os.kill(workers.pop(), signal.SIGKILL)
        async with asyncio.timeout(30):
            assert await process.wait() != 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("50000 100000\n", 1), ("max 100000\n", None), ("150000 100000\n", 1), (None, None)],
)
def test_default_workers_follow_the_cpu_limit(
    tmp_path: Path, cpu_max: str | None, expected: int | None
) -> None:
    """500m (the chart's limit) is one worker, no quota is every CPU the process may run on."""
    cgroup = tmp_path / "cpu.max"
    if cpu_max is not None:
        cgroup.write_text(cpu_max)
    assert default_workers(cgroup) == (expected or len(os.sched_getaffinity(0)))


async def test_workers_refuse_a_taken_port(tmp_path: Path, ca: ClusterCA) -> None:
    certs = ca.write_pair(tmp_path / "certs", "webhook", ["127.0.0.1"])
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("peerpods-webhook")), "--cert-dir", str(certs), "--workers=2",
            f"--webhook-bind-address=127.0.0.1:{port}", "--health-probe-bind-address=127.0.0.1:0",
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, stderr = await done.communicate()
    assert done.returncode == 2 and b"cannot listen on" in stderr and b"Traceback" not in stderr


async def test_http2_settings_take_a_burst_on_one_connection(tmp_path: Path, ca: ClusterCA) -> None:
    """More than h2's default 100 streams and 64 KiB of reviews in flight: a burst of pod creations
    stays on one connection (the API server opens another, a TLS handshake, past the stream limit)."""
    certs = ca.write_pair(tmp_path / "certs", "webhook", ["127.0.0.1"])
    async with serving(SETTINGS, ServingCertificate(certs), "127.0.0.1", 0, "127.0.0.1", 0) as (port, _):
        context = ssl.create_default_context(cadata=ca.pem.decode())
        context.set_alpn_protocols(["h2"])
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        writer.write(client.data_to_send())
        window = 0
        async with asyncio.timeout(10):
            while client.remote_settings.max_concurrent_streams < 1000 or window < 1 << 20:
                for event in client.receive_data(await reader.read(65536)):
                    if isinstance(event, h2.events.WindowUpdated) and event.stream_id == 0:
                        window += event.delta
        assert client.remote_settings.initial_window_size >= 1 << 20
        writer.close()


@pytest.fixture
async def webhook_port(tmp_path: Path, ca: ClusterCA) -> AsyncIterator[int]:
    certs = ca.write_pair(tmp_path / "certs", "webhook", ["127.0.0.1"])
    async with serving(SETTINGS, ServingCertificate(certs), "127.0.0.1", 0, "127.0.0.1", 0) as (port, _):
        yield port


def _pod_review() -> bytes:
    return json.dumps(_review({"kind": "Pod", "metadata": {}, "spec": CASES[0]["spec"]})).encode()


async def test_http2_continuation_padding_ping_and_many_streams(webhook_port: int, ca: ClusterCA) -> None:
    """Header blocks split over CONTINUATION frames, padded DATA, PING, interleaved streams: what a
    conforming client may send (the server frames HTTP/2 itself)."""
    async with H2Client.connect(webhook_port, ca) as client:
        big = client.request("/mutate-v1-pod", _pod_review(), **{"x-filler": "f" * 40_000})
        streams = [client.request("/mutate-v1-pod", _pod_review()) for _ in range(150)]
        client.conn.ping(b"peerpods")
        await client.until(lambda: {big, *streams} <= client.ended)
        assert any(
            isinstance(e, h2.events.PingAckReceived) and e.ping_data == b"peerpods" for e in client.events
        )
        for stream in (big, *streams):
            assert client.statuses[stream] == 200
            assert json.loads(client.bodies[stream])["response"]["patchType"] == "JSONPatch"
        assert (await client.post("/other", b"{}"))[0] == 404  # the connection goes on


async def test_http2_answer_waits_for_the_client_window(webhook_port: int, ca: ClusterCA) -> None:
    """A client that advertises a 16-byte window gets the answer in pieces, one per WINDOW_UPDATE."""
    async with H2Client.connect(webhook_port, ca) as client:
        client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16})
        await client.until(lambda: any(isinstance(e, h2.events.SettingsAcknowledged) for e in client.events))
        status, body = await client.post("/mutate-v1-pod", _pod_review())
        pieces = [e for e in client.events if isinstance(e, h2.events.DataReceived)]
        assert status == 200 and json.loads(body)["response"]["allowed"] is True
        assert len(pieces) > 1 and all(len(e.data) <= 16 for e in pieces)


@pytest.mark.parametrize(
    "sent",
    [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"." * 16,
     PREFACE + frame(DATA, 0, 0, b"x"),
     PREFACE + frame(HEADERS, 0x4, 2, b"\x82"),
     PREFACE + frame(HEADERS, 0x4, 1, b"\xff\xff\xff\xff"),
     PREFACE + frame(PING, 0, 0, b"short")],
    ids=["not-http2", "data-on-stream-0", "even-stream", "bad-hpack", "short-ping"],
)  # fmt: skip
async def test_http2_protocol_errors_end_the_connection_with_goaway(
    webhook_port: int, ca: ClusterCA, sent: bytes
) -> None:
    context = ssl.create_default_context(cadata=ca.pem.decode())
    context.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.open_connection("127.0.0.1", webhook_port, ssl=context)
    writer.write(sent)
    received = b""
    async with asyncio.timeout(10):
        while chunk := await reader.read(65536):
            received += chunk
    writer.close()
    kinds = []
    while len(received) >= 9:  # the server's frames: SETTINGS, WINDOW_UPDATE, ..., GOAWAY, then EOF
        length = int.from_bytes(received[:3], "big")
        kinds.append(received[3])
        received = received[9 + length :]
    assert kinds[-1] == GOAWAY


async def test_http2_oversized_review_is_refused_and_the_connection_goes_on(
    webhook_port: int, ca: ClusterCA
) -> None:
    async with H2Client.connect(webhook_port, ca) as client:

        def reset() -> bool:
            return any(isinstance(e, h2.events.StreamReset) for e in client.events)

        await client.until(lambda: client.conn.remote_settings.initial_window_size > 1 << 16)
        stream = client.conn.get_next_available_stream_id()
        client.conn.send_headers(stream, [(":method", "POST"), (":path", "/mutate-v1-pod"),
                                          (":scheme", "https"), (":authority", "127.0.0.1")])  # fmt: skip
        left = MAX_REVIEW_BYTES + 1
        while left and not reset():
            window = client.conn.local_flow_control_window(stream)
            if size := min(left, window, client.conn.max_outbound_frame_size):
                client.conn.send_data(stream, b" " * size, end_stream=size == left)
                client.writer.write(client.conn.data_to_send())
                left -= size
            else:  # the server's WINDOW_UPDATE, or its refusal
                await client.until(lambda: reset() or client.conn.local_flow_control_window(stream) > 0)
        await client.until(reset)
        refusal = next(e for e in client.events if isinstance(e, h2.events.StreamReset))
        assert refusal.stream_id == stream and refusal.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
        assert (await client.post("/mutate-v1-pod", _pod_review()))[0] == 200
