"""Full KBS handshakes per second: auth + attest + resource, as a guest does them.

    python -m bench.kbs [--tee sample,snp] [--workers 1,2] [--seconds 5] [--concurrency 48]
                        [--storage localfs,postgres,redis] [--profile FILE]

Each run starts `--workers` KBS worker processes (the `kbs` server code, SO_REUSEPORT on one port,
sharing one storage as replicas do: LocalFs, or a PostgreSQL or Redis server started for the run
from the Debian packages, as the tests do) and load-generator processes that run `--concurrency`
handshakes at a time, each with a fresh TEE key and fresh evidence bound to the fresh nonce. The SNP
evidence is built per handshake by the SNP test builder (tests/verifier/snp_builder.py): a report
carrying the binding digest, signed by a test VCEK whose ARK/ASK/ASVK are the trust anchors of the
bench KBS's SNP verifier -- the binding is never relaxed. The shipped attestation policy appraises
SNP against registered reference values and the shipped resource policy releases the resource; the
sample TEE runs with test policies that trust it.

Printed: handshakes/s, p50/p99 latency, CPU per handshake of servers and clients, and a breakdown
of the server's CPU per step measured in-process (the rest is HTTP, asyncio and JSON framing).
`--profile FILE` runs the first worker under cProfile with a CPU clock (the machine is shared) and
prints the functions taking the most of it per handshake; the statistics stay in FILE.<storage>.<tee>.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.common import cpu_seconds, percentile
from kbs.attestation import BuiltinAttestation
from kbs.broker import Broker
from kbs.config import build_broker, parse_config
from kbs.jwe import encrypt
from kbs.storage.factory import LOCAL_FS, POSTGRES, REDIS
from kbs.store import ResourcePath
from protocols import kbs
from tests.kbs.dbservers import Postgres, Redis
from tests.kbs.scaleout import replica_config
from tests.kbs.support import AFFIRMING_POLICY, SAMPLE_TRUSTING_POLICY, AdminKey, config_text
from tests.verifier import snp_builder
from verifier.api import TEES, TeeSpec, VerifierRegistry
from verifier.snp import SnpVerifier
from verifier.snp.anchors import AmdRoots
from verifier.snp.report import Generation

TARGET_SNP_PER_SECOND = 500
RESOURCE = "default/key/bench"
SECRET = b"bench secret"
PEM = serialization.Encoding.PEM


# ---- SNP material shared by the server (anchors) and the load generators (VCEK key)


@dataclass(frozen=True)
class SnpMaterial:
    ark: bytes
    ask: bytes
    asvk: bytes
    vek_key: bytes  # PKCS#8 PEM
    vek_der: bytes

    @classmethod
    def create(cls) -> SnpMaterial:
        case = snp_builder.make_case()
        key = case.vek_key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        pki = case.pki
        return cls(
            pki.ark.public_bytes(PEM),
            pki.ask.public_bytes(PEM),
            pki.asvk.public_bytes(PEM),
            key,
            case.vek_der,
        )

    def registry(self) -> VerifierRegistry:
        """Every TEE as configured, except `snp`, whose verifier trusts the test ARK."""
        from cryptography import x509

        roots = AmdRoots.checked(
            ark=x509.load_pem_x509_certificate(self.ark),
            ask=x509.load_pem_x509_certificate(self.ask),
            asvk=x509.load_pem_x509_certificate(self.asvk),
        )
        anchors = {Generation.MILAN: roots}
        snp = TeeSpec(lambda config: SnpVerifier(anchors=anchors, vcek_sources=[]))
        return VerifierRegistry(tees={**TEES, "snp": snp})


class EvidenceBuilder:
    """The guest's side of the binding: evidence whose report data is the given digest.

    SNP: the report is laid out and signed per handshake; the evidence JSON around it is rendered
    once with placeholders, since only report_data and the signature change (keeps the load
    generator's CPU for the signing that a real guest's firmware would do)."""

    _REPORT_DATA, _R, _S = '"@report_data@"', '"@r@"', '"@s@"'

    def __init__(self, tee: str, material: SnpMaterial | None) -> None:
        self.tee = tee
        self._spec = snp_builder.ReportSpec()
        if material is not None:
            key = serialization.load_pem_private_key(material.vek_key, None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            self._key = key
            report = snp_builder.build_report(self._spec, self._key)
            doc = json.loads(snp_builder.evidence_json(self._spec, report, [("VCEK", material.vek_der)]))
            doc["attestation_report"]["report_data"] = "@report_data@"
            doc["attestation_report"]["signature"] = {"r": "@r@", "s": "@s@"}
            self._template = json.dumps(doc, separators=(",", ":"))

    def __call__(self, digest: bytes) -> bytes:
        if self.tee == "sample":
            return json.dumps({"svn": "1", "report_data": base64.b64encode(digest).decode()}).encode()
        report_data = kbs.report_data(digest)
        report = snp_builder.build_report(replace(self._spec, report_data=report_data), self._key)
        return (
            self._template.replace(self._REPORT_DATA, json.dumps(list(report_data)))
            .replace(self._R, json.dumps(list(report[0x2A0:0x2E8])))
            .replace(self._S, json.dumps(list(report[0x2E8:0x330])))
            .encode()
        )


def attestation_body(nonce: str, tee_pubkey: kbs.TeePubKey, evidence: bytes) -> bytes:
    """The Attestation JSON with the evidence spliced in as it is (no second JSON encoding)."""
    runtime = kbs.dumps(kbs.RuntimeData(nonce, tee_pubkey).to_json())
    return (
        b'{"init-data":null,"runtime-data":' + runtime
        + b',"tee-evidence":{"primary_evidence":' + evidence + b',"additional_evidence":""}}'
    )  # fmt: skip


# ---- the server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_worker(config: str, material: SnpMaterial, profile: str = "") -> None:
    """One KBS worker; with `profile`, under cProfile, its statistics written there when it stops."""
    import cProfile

    import uvloop

    from kbs.cli import serve

    profiler = cProfile.Profile(time.process_time) if profile else None  # CPU: the machine is shared
    if profiler is not None:
        profiler.enable()
    uvloop.run(serve(parse_config(config), reuse_port=True, verifiers=material.registry()))
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)


async def prepare(broker: Broker, tee: str, material: SnpMaterial) -> None:
    """Policies that release the resource to `tee`, its reference values, the resource."""
    await broker.start()
    if tee == "sample":
        await broker.attestation.set_policy("default_cpu", SAMPLE_TRUSTING_POLICY)
        await broker.policy.set(AFFIRMING_POLICY)
    else:  # the shipped policies, with reference values for the builder's guest
        payload = base64.b64encode(json.dumps(snp_reference_values(material)).encode()).decode()
        await broker.attestation.register_reference_value(
            json.dumps({"version": "0.1.0", "type": "sample", "payload": payload}).encode()
        )
    await broker.store.put(ResourcePath.parse(RESOURCE.split("/")), SECRET)
    broker.policy.release()


async def _prepared(broker: Broker, tee: str, material: SnpMaterial) -> None:
    """`prepare`, then the broker's storage closed (its workers open their own)."""
    try:
        await prepare(broker, tee, material)
    finally:
        await broker.close()


def snp_reference_values(material: SnpMaterial) -> dict[str, Any]:
    """Reference values matching the builder's report, for the shipped default_cpu policy."""
    builder = EvidenceBuilder("snp", material)
    digest = bytes(48)
    verifier = material.registry().get("snp")
    claims = verifier.evaluate(builder(digest), kbs.report_data(digest))
    return {
        "snp_launch_measurement": [claims["measurement"]],
        "snp_bootloader": [claims["reported_tcb_bootloader"]],
        "snp_microcode": [claims["reported_tcb_microcode"]],
        "snp_snp_svn": [claims["reported_tcb_snp"]],
        "snp_tee_svn": [claims["reported_tcb_tee"]],
        "snp_smt_enabled": claims["platform_smt_enabled"],
        "snp_tsme_enabled": claims["platform_tsme_enabled"],
        "snp_guest_abi_major": claims["policy_abi_major"],
        "snp_guest_abi_minor": claims["policy_abi_minor"],
        "snp_single_socket": claims["policy_single_socket"],
        "snp_smt_allowed": claims["policy_smt_allowed"],
    }


# ---- the load generators


class Http1:
    """A minimal keep-alive HTTP/1.1 client: the load generator shares the machine with the KBS, so
    it should spend as little CPU per request as it can (aiohttp's client costs several times more).
    Enough for the KBS's answers: a status line, headers, a Content-Length body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self._reader, self._writer, self._host = reader, writer, host

    @classmethod
    async def connect(cls, host: str, port: int) -> Http1:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def request(
        self, method: str, path: str, body: bytes = b"", cookie: str | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._host}\r\nContent-Length: {len(body)}\r\n"
        if cookie:
            head += f"Cookie: kbs-session-id={cookie}\r\n"
        self._writer.write(head.encode("ascii") + b"\r\n" + body)
        lines = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return status, headers, await self._reader.readexactly(int(headers.get("content-length", "0")))

    def close(self) -> None:
        self._writer.close()


async def handshake(http: Http1, build: EvidenceBuilder) -> bytes:
    """One guest: fresh key, auth, bound evidence, attest, resource (the JWE)."""
    key = ec.generate_private_key(ec.SECP256R1())
    tee_pubkey = kbs.tee_pubkey_of(key.public_key())
    status, headers, body = await http.request("POST", "/kbs/v0/auth", kbs.Request(build.tee).to_json())
    assert status == 200, body
    challenge = kbs.parse_challenge(body)
    cookie = headers["set-cookie"].split(";", 1)[0].partition("=")[2]
    digest = kbs.runtime_data_digest(kbs.runtime_data_claims(challenge.nonce, tee_pubkey, ""))
    attestation = attestation_body(challenge.nonce, tee_pubkey, build(digest))
    status, _, body = await http.request("POST", "/kbs/v0/attest", attestation, cookie)
    assert status == 200, body
    status, _, body = await http.request("GET", f"/kbs/v0/resource/{RESOURCE}", cookie=cookie)
    assert status == 200, body
    return body


async def _load(port: int, build: EvidenceBuilder, concurrency: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def guest() -> None:
        http = await Http1.connect("127.0.0.1", port)  # kept alive: SO_REUSEPORT pins it to a worker
        try:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                await handshake(http, build)
                latencies.append(time.perf_counter() - start)
        finally:
            http.close()

    await asyncio.gather(*(guest() for _ in range(concurrency)))
    return latencies


def _client_process(
    port: int, tee: str, material: SnpMaterial, concurrency: int, seconds: float, out: Any
) -> None:
    import uvloop

    build = EvidenceBuilder(tee, material)  # set up before the CPU clock starts
    started = time.process_time()
    latencies = uvloop.run(_load(port, build, concurrency, seconds))
    out.put((latencies, time.process_time() - started))


# ---- one run


@dataclass
class RunResult:
    storage: str
    tee: str
    workers: int
    clients: int
    handshakes: int
    seconds: float
    latencies: list[float]
    server_cpu: float
    client_cpu: float

    @property
    def rate(self) -> float:
        return self.handshakes / self.seconds

    def line(self) -> str:
        p50, p99 = percentile(self.latencies, 0.5) * 1e3, percentile(self.latencies, 0.99) * 1e3
        return (
            f"{self.storage:8} {self.tee:6} workers={self.workers} clients={self.clients}: "
            f"{self.rate:7.1f} handshakes/s, "
            f"p50 {p50:6.2f} ms, p99 {p99:6.2f} ms; CPU per handshake: server "
            f"{self.server_cpu / self.handshakes * 1e3:.2f} ms, "
            f"clients {self.client_cpu / self.handshakes * 1e3:.2f} ms"
        )


STORAGES = {"localfs": LOCAL_FS, "postgres": POSTGRES, "redis": REDIS}


@contextlib.contextmanager
def storage_server(storage: str) -> Iterator[str]:
    """The URL of a fresh database server for `storage` ("" for LocalFs), stopped afterwards."""
    if storage == LOCAL_FS:
        yield ""
        return
    directory = Path(tempfile.mkdtemp(prefix="kbs-bench-db-"))
    directory.chmod(0o755)
    server: Postgres | Redis = Postgres(directory) if storage == POSTGRES else Redis(directory)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def run(
    storage: str,
    tee: str,
    workers: int,
    clients: int,
    concurrency: int,
    seconds: float,
    material: SnpMaterial,
    profile: str = "",
) -> RunResult:
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="kbs-bench-") as scratch, storage_server(storage) as db_url:
        admin = AdminKey.create(Path(scratch))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        config = replica_config(storage, Path(scratch), admin, port, db_url)
        # Policies, reference values and the resource go into the shared storage before the workers
        # start (the workers would also see them if set later).
        asyncio.run(_prepared(build_broker(parse_config(config), material.registry()), tee, material))
        servers = [
            context.Process(target=_server_worker, args=(config, material, profile if index == 0 else ""))
            for index in range(workers)
        ]
        for server in servers:
            server.start()
        try:
            asyncio.run(_wait_up(url, workers))
            jwe = asyncio.run(_one(port, tee, material))
            assert kbs.parse_jwe_response(jwe).header()["alg"] == "ECDH-ES+A256KW"
            asyncio.run(
                _load(port, EvidenceBuilder(tee, material), concurrency, min(1.0, seconds))
            )  # warm up every worker
            before = sum(cpu_seconds(s.pid) for s in servers if s.pid)
            out = context.Queue()
            loaders = [
                context.Process(target=_client_process, args=(port, tee, material, concurrency, seconds, out))
                for _ in range(clients)
            ]
            started = time.perf_counter()
            for loader in loaders:
                loader.start()
            latencies: list[float] = []
            client_cpu = 0.0
            for _ in loaders:
                samples, cpu = out.get(timeout=seconds + 120)
                latencies += samples
                client_cpu += cpu
            elapsed = time.perf_counter() - started
            server_cpu = sum(cpu_seconds(s.pid) for s in servers if s.pid) - before
            for loader in loaders:
                loader.join()
        finally:
            for server in servers:
                if server.pid:
                    os.kill(server.pid, signal.SIGTERM)
            for server in servers:
                server.join(30)
    return RunResult(
        storage, tee, workers, clients, len(latencies), elapsed, latencies, server_cpu, client_cpu
    )


async def _wait_up(url: str, workers: int) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            try:
                async with http.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        await asyncio.sleep(0.5 * workers)  # the other workers bind the same port
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.1)
    raise RuntimeError(f"KBS at {url} did not start")


async def _one(port: int, tee: str, material: SnpMaterial) -> bytes:
    http = await Http1.connect("127.0.0.1", port)
    try:
        return await handshake(http, EvidenceBuilder(tee, material))
    finally:
        http.close()


# ---- where the time goes (in-process, one thread)


def _time(work: Callable[[], object], iterations: int) -> float:
    """CPU seconds per call (all threads of this process)."""
    start = time.process_time()
    for _ in range(iterations):
        work()
    return (time.process_time() - start) / iterations


async def _atime(work: Callable[[], Awaitable[object]], iterations: int) -> float:
    """CPU seconds per awaited call of `work`."""
    start = time.process_time()
    for _ in range(iterations):
        await work()
    return (time.process_time() - start) / iterations


def breakdown(tee: str, material: SnpMaterial, iterations: int) -> list[tuple[str, float]]:
    """Seconds per step of one handshake, measured on the real objects of one KBS."""
    with tempfile.TemporaryDirectory(prefix="kbs-bench-") as scratch:
        admin = AdminKey.create(Path(scratch))
        broker = build_broker(parse_config(config_text(Path(scratch) / "s", admin.path)), material.registry())
        return asyncio.run(_breakdown(broker, tee, material, iterations))


async def _breakdown(broker: Broker, tee: str, material: SnpMaterial, n: int) -> list[tuple[str, float]]:
    await prepare(broker, tee, material)
    try:
        return await _steps(broker, tee, EvidenceBuilder(tee, material), n)
    finally:
        await broker.close()


async def _steps(broker: Broker, tee: str, build: EvidenceBuilder, n: int) -> list[tuple[str, float]]:
    key = ec.generate_private_key(ec.SECP256R1())
    tee_pubkey = kbs.tee_pubkey_of(key.public_key())
    request = kbs.Request(tee).to_json()
    challenge, session = await broker.auth(request)
    digest = kbs.runtime_data_digest(kbs.runtime_data_claims(challenge.nonce, tee_pubkey, ""))
    evidence = build(digest)
    body = attestation_body(challenge.nonce, tee_pubkey, evidence)
    token, _ = await broker.attest(session.id, body)
    verified = broker.tokens.verify(token)
    data = {"plugin": "resource", "resource-path": RESOURCE.split("/"), "query": {}}
    assert isinstance(broker.attestation, BuiltinAttestation)
    verifier = broker.attestation.service.verifiers.get(tee)

    async def attest_fresh() -> tuple[str, str]:
        """A new session attested: (session id, token)."""
        _, fresh = await broker.auth(request)
        digest = kbs.runtime_data_digest(kbs.runtime_data_claims(fresh.nonce, tee_pubkey, ""))
        token, _ = await broker.attest(fresh.id, attestation_body(fresh.nonce, tee_pubkey, build(digest)))
        return fresh.id, token

    async def attests() -> float:
        start = time.process_time()
        for _ in range(n):
            await attest_fresh()
        return (time.process_time() - start) / n

    async def resources() -> float:
        """One resource per fresh session, as in a handshake (a session's later reads hit a cache)."""
        fresh = [(await attest_fresh())[0] for _ in range(n)]
        start = time.process_time()
        for session_id in fresh:
            await broker.get_resource(RESOURCE.split("/"), {}, session_id, None)
        return (time.process_time() - start) / n

    async def first_token_reads() -> float:
        tokens = [(await attest_fresh())[1] for _ in range(n)]
        start = time.process_time()
        for fresh_token in tokens:
            broker.tokens.stored(fresh_token)
        return (time.process_time() - start) / n

    client_key = _time(lambda: kbs.tee_pubkey_of(ec.generate_private_key(ec.SECP256R1()).public_key()), n)
    client_evidence = _time(lambda: build(digest), n)
    client_binding = _time(
        lambda: attestation_body(
            challenge.nonce,
            tee_pubkey,
            kbs.runtime_data_digest(kbs.runtime_data_claims(challenge.nonce, tee_pubkey, "")),
        ),
        n,
    )
    auth = await _atime(lambda: broker.auth(request), n)
    parse = _time(lambda: kbs.parse_attestation(body), n)
    verify = _time(
        lambda: verifier.evaluate(evidence, kbs.report_data(digest) if tee != "sample" else digest), n
    )
    attest_with_auth = await attests()
    token_check = await first_token_reads()
    policy = await _atime(lambda: broker.policy.allows(verified.claims, data), n)
    jwe = _time(lambda: encrypt(SECRET, verified.tee_pubkey), n)
    resource = await resources()
    attest = attest_with_auth - client_evidence - client_binding - auth
    return [
        ("client: TEE key generation", client_key),
        ("client: evidence for the nonce", client_evidence),
        ("client: binding digest (RFC 8785, SHA-384), body", client_binding),
        ("server: /auth (nonce, session row)", auth),
        ("server: /attest total", attest),
        ("  parse Attestation JSON", parse),
        (f"  {tee} verifier (evidence, signature, binding)", verify),
        ("  binding, appraisal policy, EAR signing, session", attest - parse - verify),
        ("server: /resource total", resource),
        ("  session token (stored: parse, expiry, tee-pubkey)", token_check),
        ("  resource policy (regorus)", policy),
        ("  JWE (ECDH-ES+A256KW, A256GCM)", jwe),
        ("  store read, session lookup, JWE JSON", resource - token_check - policy - jwe),
    ]


def print_profile(path: str, top: int = 30) -> None:
    """The functions of one worker's profile with the most own CPU time, per handshake (the worker's
    calls of `parse_attestation`, a plain function: cProfile counts each resumption of a coroutine
    as a call; start-up and warm-up included)."""
    import pstats

    stats = pstats.Stats(path)
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # type: ignore[attr-defined]
    handshakes = max(
        (
            calls
            for (filename, _, name), (_, calls, *_) in rows
            if filename.endswith("kbs.py") and name == "parse_attestation"
        ),
        default=1,
    )
    total = sum(row[1][2] for row in rows)
    each = total / handshakes * 1e3
    print(f"  profile of worker 0 ({path}): {handshakes} handshakes, {each:.2f} ms CPU each under cProfile")
    print(f"  {'own ms':>7} {'cum ms':>7} {'calls':>6}  function (per handshake)")
    for (filename, line, name), (_, calls, own, cumulative, _) in rows[:top]:
        where = f"{Path(filename).name}:{line}({name})" if line else name
        own_ms, cumulative_ms = own / handshakes * 1e3, cumulative / handshakes * 1e3
        print(f"  {own_ms:7.3f} {cumulative_ms:7.3f} {calls / handshakes:6.1f}  {where}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tee", default="sample,snp")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--clients", type=int, default=1, help="load-generator processes")
    parser.add_argument("--concurrency", type=int, default=48, help="handshakes in flight per load generator")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--breakdown-iterations", type=int, default=200)
    parser.add_argument("--storage", default="localfs", help="localfs, postgres and/or redis")
    parser.add_argument(
        "--profile",
        default="",
        help="run the first worker under cProfile; its statistics go to PROFILE.<storage>.<tee> and the"
        " functions taking the most time are printed",
    )
    args = parser.parse_args(argv)
    material = SnpMaterial.create()
    load = os.getloadavg()[0]
    print(f"KBS handshakes (auth + attest + resource), {os.cpu_count()} CPUs, load average {load:.2f}")
    results = []
    for storage in (STORAGES[name] for name in args.storage.split(",")):
        for tee in args.tee.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                profile = f"{args.profile}.{storage.lower()}.{tee}" if args.profile else ""
                result = run(
                    storage, tee, workers, args.clients, args.concurrency, args.seconds, material, profile
                )
                results.append(result)
                print(result.line(), flush=True)
                if profile:
                    print_profile(profile)
    for tee in args.tee.split(","):
        steps = breakdown(tee, material, args.breakdown_iterations)
        print(f"\nwhere the time goes, {tee} (one thread, in-process, per handshake):")
        for label, seconds in steps:
            print(f"  {label:52} {seconds * 1e3:7.3f} ms")
    best_snp = max((r.rate for r in results if r.tee == "snp"), default=None)
    if best_snp is not None:
        verdict = "meets" if best_snp >= TARGET_SNP_PER_SECOND else "below"
        print(f"\nSNP: best {best_snp:.0f} handshakes/s ({verdict} the {TARGET_SNP_PER_SECOND}/s target)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
