"""SNP reports through the `/dev/sev-guest` ioctl, for kernels without configfs-tsm (Linux < 6.7).

Encoding per `include/uapi/linux/sev-guest.h`:
`struct snp_guest_request_ioctl {u8 msg_version; u64 req_data; u64 resp_data; u64 exitinfo2}` (32
bytes with padding), `SNP_GET_REPORT = _IOWR('S', 0x0, that struct)`; the request is
`struct snp_report_req {u8 user_data[64]; u32 vmpl; u8 rsvd[28]}` and the response buffer
(`u8 data[4000]`) holds the firmware's MSG_REPORT_RSP: `u32 status; u32 report_size; u8 rsvd[24];`
then the report. The request/response encoding is pure and tested; the ioctl itself needs an SNP guest.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
from pathlib import Path

from podvm.attestation_agent.errors import AttesterError
from podvm.attestation_agent.snp_report import REPORT_SIZE

SEV_GUEST_DEVICE = Path("/dev/sev-guest")
MSG_VERSION = 1
GUEST_REQUEST = struct.Struct("<B7xQQQ")
REPORT_REQUEST = struct.Struct("<64sI28x")
RESPONSE_SIZE = 4000
_RESPONSE_HEADER = struct.Struct("<II24x")
_IOC_READ_WRITE = 3


def iowr(ioc_type: str, number: int, size: int) -> int:
    """Linux `_IOWR(type, nr, size)`."""
    return (_IOC_READ_WRITE << 30) | (size << 16) | (ord(ioc_type) << 8) | number


SNP_GET_REPORT = iowr("S", 0x0, GUEST_REQUEST.size)


class SevGuestError(AttesterError):
    """The SEV guest driver or the firmware refused the report request."""


def encode_report_request(report_data: bytes, vmpl: int = 0) -> bytes:
    if len(report_data) != 64:
        raise SevGuestError(f"SNP report data must be 64 bytes, got {len(report_data)}")
    if not 0 <= vmpl <= 3:
        raise SevGuestError(f"VMPL must be 0..3, got {vmpl}")
    return REPORT_REQUEST.pack(report_data, vmpl)


def encode_guest_request(request_address: int, response_address: int) -> bytes:
    return GUEST_REQUEST.pack(MSG_VERSION, request_address, response_address, 0)


def decode_exitinfo2(guest_request: bytes) -> tuple[int, int]:
    """(firmware error, VMM error) the driver wrote back into the ioctl struct."""
    exitinfo2 = GUEST_REQUEST.unpack(guest_request)[3]
    return exitinfo2 & 0xFFFFFFFF, exitinfo2 >> 32


def decode_report_response(response: bytes) -> bytes:
    """The report inside MSG_REPORT_RSP, after checking its status and size."""
    if len(response) < _RESPONSE_HEADER.size + REPORT_SIZE:
        raise SevGuestError(f"SNP report response is only {len(response)} bytes")
    status, size = _RESPONSE_HEADER.unpack_from(response)
    if status != 0:
        raise SevGuestError(f"SNP firmware refused the report request: status 0x{status:x}")
    if size != REPORT_SIZE:
        raise SevGuestError(f"SNP firmware returned a {size}-byte report, expected {REPORT_SIZE}")
    return response[_RESPONSE_HEADER.size : _RESPONSE_HEADER.size + REPORT_SIZE]


def get_report(report_data: bytes, vmpl: int = 0, device: Path = SEV_GUEST_DEVICE) -> bytes:
    """A raw report from the firmware (no certificate table: the KBS then fetches the VCEK)."""
    request = ctypes.create_string_buffer(encode_report_request(report_data, vmpl), REPORT_REQUEST.size)
    response = ctypes.create_string_buffer(RESPONSE_SIZE)
    guest_request = bytearray(encode_guest_request(ctypes.addressof(request), ctypes.addressof(response)))
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise SevGuestError(f"cannot open {device}: {exc.strerror or exc}") from None
    try:
        fcntl.ioctl(fd, SNP_GET_REPORT, guest_request, True)
    except OSError as exc:
        fw_error, vmm_error = decode_exitinfo2(bytes(guest_request))
        raise SevGuestError(
            f"SNP_GET_REPORT failed: {exc.strerror or exc}"
            f" (firmware error 0x{fw_error:x}, VMM error {vmm_error})"
        ) from None
    finally:
        os.close(fd)
    return decode_report_response(response.raw)
