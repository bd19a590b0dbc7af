"""Byte-exact ttrpc framing, including the worked examples in reference/kata.md §2.9."""

from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from protocols.proto import health_pb2, hypervisor_pb2, ttrpc_pb2
from protocols.ttrpc.envelope import (
    SUCCESS,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    peek_request,
    response_frame,
)
from protocols.ttrpc.frames import (
    MAX_PAYLOAD,
    Frame,
    FrameDecoder,
    FrameTooLarge,
    MessageType,
    OversizedFrame,
    encode_frame,
)
from protocols.ttrpc.status import Code, TtrpcError

REQUEST_FIELDS = (
    st.text(max_size=30),
    st.text(max_size=30),
    st.binary(max_size=300),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=3),
)


def test_health_check_request_bytes() -> None:
    frame = encode_frame(1, MessageType.REQUEST, encode_request("grpc.Health", "Check", b""))
    assert frame == bytes.fromhex("00000014 00000001 01 00") + b"\x0a\x0bgrpc.Health\x12\x05Check"


def test_health_check_response_bytes() -> None:
    payload = health_pb2.HealthCheckResponse(
        status=health_pb2.HealthCheckResponse.SERVING
    ).SerializeToString()
    assert response_frame(1, payload) == bytes.fromhex("00000006 00000001 02 00 0a00 1202 0801")


def test_create_vm_response_bytes() -> None:
    path = "/run/peerpod/pods/sb1/agent.ttrpc"
    payload = hypervisor_pb2.CreateVMResponse(agentSocketPath=path).SerializeToString()
    expected = bytes.fromhex("00000027 00000001 02 00 0a00 1223 0a21") + path.encode()
    assert response_frame(1, payload) == expected


def test_stop_vm_error_bytes() -> None:
    frame = response_frame(1, code=Code.NOT_FOUND, message="sandbox not found")
    assert frame == bytes.fromhex("00000017 00000001 02 00 0a15 0805 1211") + b"sandbox not found"


def test_create_vm_request_layout() -> None:
    request = hypervisor_pb2.CreateVMRequest(id="sb1", networkNamespacePath="/var/run/netns/cni-1")
    request.annotations["io.katacontainers.config.hypervisor.machine_type"] = "t3.small"
    body = encode_request("hypervisor.Hypervisor", "CreateVM", request.SerializeToString(), 600_000_000_000)
    assert body.startswith(
        b"\x0a\x15hypervisor.Hypervisor\x12\x08CreateVM\x1a\x59\x0a\x03sb1\x12\x3c\x0a\x30"
    )
    frame = encode_frame(1, MessageType.REQUEST, body)
    assert frame[:10] == bytes.fromhex("00000083 00000001 01 00")


def test_success_status_is_empty_message() -> None:
    assert encode_response(b"") == b"\x0a\x00"


def test_decoder_handles_any_chunking() -> None:
    frames = [encode_frame(i * 2 + 1, MessageType.REQUEST, bytes([i]) * i) for i in range(20)]
    stream = b"".join(frames)
    decoder = FrameDecoder()
    events = []
    for i in range(0, len(stream), 7):
        events += decoder.feed(stream[i : i + 7])
    assert [e.stream_id for e in events] == [i * 2 + 1 for i in range(20)]
    assert all(isinstance(e, Frame) and e.payload == bytes([i]) * i for i, e in enumerate(events))
    assert decoder.buffered == 0


def test_oversized_frame_is_skipped_without_losing_the_next() -> None:
    decoder = FrameDecoder()
    header = (MAX_PAYLOAD + 1).to_bytes(4, "big") + (3).to_bytes(4, "big") + b"\x01\x00"
    following = encode_frame(5, MessageType.REQUEST, b"ok")
    events = decoder.feed(header + b"x" * 1000)
    assert events == [OversizedFrame(3, MessageType.REQUEST, MAX_PAYLOAD + 1)]
    remaining = MAX_PAYLOAD + 1 - 1000
    events = decoder.feed(b"y" * (remaining - 10))
    assert events == []
    events = decoder.feed(b"y" * 10 + following)
    assert events == [Frame(5, MessageType.REQUEST, 0, b"ok")]


def test_encoder_refuses_oversized_payload() -> None:
    try:
        encode_frame(1, MessageType.REQUEST, b"x" * (MAX_PAYLOAD + 1))
    except FrameTooLarge as exc:
        assert "exceeds maximum message size of 4194304" in str(exc)
    else:
        raise AssertionError("oversized frame was encoded")


@given(st.binary(max_size=2000), st.lists(st.integers(min_value=1, max_value=50), max_size=40))
def test_decoder_never_crashes_on_random_bytes(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(max_payload=256)
    position = 0
    for cut in cuts:
        decoder.feed(data[position : position + cut])
        position += cut
    decoder.feed(data[position:])


@given(*REQUEST_FIELDS)
def test_peek_agrees_with_the_full_decoder(
    service: str, method: str, payload: bytes, timeout: int, metadata: list[tuple[str, str]]
) -> None:
    encoded = encode_request(service, method, payload, timeout, metadata)
    peeked, full = peek_request(encoded), decode_request(encoded)
    assert (peeked.service, peeked.method, peeked.timeout_nano) == (
        full.service,
        full.method,
        full.timeout_nano,
    )


@given(st.binary(max_size=200))
def test_peek_rejects_garbage_only_with_invalid_argument(data: bytes) -> None:
    try:
        peek_request(data)
    except TtrpcError as exc:
        assert exc.code == Code.INVALID_ARGUMENT


@given(*REQUEST_FIELDS)
def test_hand_encoded_request_matches_protobuf(
    service: str, method: str, payload: bytes, timeout: int, metadata: list[tuple[str, str]]
) -> None:
    reference = ttrpc_pb2.Request(service=service, method=method, payload=payload, timeout_nano=timeout)
    for key, value in metadata:
        reference.metadata.add(key=key, value=value)
    assert encode_request(service, method, payload, timeout, metadata) == reference.SerializeToString()


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=2**31 - 1), st.text(max_size=40))
def test_hand_encoded_response_matches_protobuf(payload: bytes, code: int, message: str) -> None:
    reference = ttrpc_pb2.Response(payload=payload)
    reference.status.code = code
    reference.status.message = message
    assert encode_response(payload, code, message) == reference.SerializeToString()


def _protobuf_decode_response(data: bytes) -> bytes | str:
    try:
        response = ttrpc_pb2.Response.FromString(data)
    except DecodeError:
        return "refused"
    return "refused" if response.status.code else response.payload


def _decode_response(data: bytes) -> bytes | str:
    try:
        return decode_response(data)
    except TtrpcError:
        return "refused"


@given(st.binary(max_size=300), st.binary(max_size=12))
def test_decode_response_by_hand_agrees_with_protobuf(payload: bytes, garbage: bytes) -> None:
    for data in (encode_response(payload), SUCCESS + garbage, encode_response(payload) + garbage):
        assert _decode_response(data) == _protobuf_decode_response(data)
