"""Where DCAP collateral comes from: Intel PCS or a PCCS over HTTP, or an offline file.

Both implement `CollateralSource.fetch(fmspc, ca) -> RawCollateral`, the only I/O of the TDX and
SGX verifiers. PCS/PCCS endpoints and headers are those of Intel's v4 API as upstream Trustee uses
them (`<tdx|sgx>/certification/v4/tcb`, `.../qe/identity`, `sgx/certification/v4/pckcrl` for
both, issuer chains URL-encoded in response headers). The offline file is the JSON written by
Intel's PCS Client Tool, which upstream reads for `collateral_service = "file://..."`. Blocking on
purpose, like the SNP verifier's KDS client: verification runs in a worker thread and only a cache
miss gets here.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlencode, urlsplit

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import Encoding

from verifier.dcap.collateral import TDX, CollateralError, DcapTee
from verifier.dcap.store import RawCollateral
from verifier.errors import VerificationError

INTEL_PCS_URL = "https://api.trustedservices.intel.com/sgx/certification/v4/"
# The CRL distribution point of the Intel SGX Root CA (PCS serves no root CRL endpoint itself).
INTEL_ROOT_CA_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
TCB_INFO_CHAIN_HEADERS = ("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
QE_IDENTITY_CHAIN_HEADERS = ("SGX-Enclave-Identity-Issuer-Chain",)
PCK_CRL_CHAIN_HEADERS = ("SGX-PCK-CRL-Issuer-Chain",)
UPDATE_TYPES = ("early", "standard")
MAX_RESPONSE_SIZE = 1 << 20  # collateral documents and CRLs are a few KB


class CollateralSource(Protocol):
    def fetch(self, fmspc: bytes, ca: str) -> RawCollateral:
        """Collateral for a platform (FMSPC) whose PCK is issued by `ca` ("platform"/"processor");
        raises a `collateral_unavailable` VerificationError when it cannot be had."""
        ...


def _unavailable(message: str) -> VerificationError:
    return VerificationError("collateral_unavailable", message)


def crl_der(body: bytes) -> bytes:
    """A CRL as DER, whichever of DER, PEM or hex text a PCS or PCCS answered with."""
    if body.startswith(b"-----BEGIN"):
        try:
            return x509.load_pem_x509_crl(body).public_bytes(Encoding.DER)
        except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm) as exc:
            raise CollateralError(f"PEM CRL does not parse: {exc}") from None
    if body[:1] == b"\x30":
        return body
    try:
        return bytes.fromhex(body.decode("ascii").strip())
    except ValueError:
        raise CollateralError("CRL is neither DER, PEM nor hex") from None


class PcsSource:
    """Intel PCS or a PCCS; as upstream, only the scheme and host of `base_url` are used."""

    def __init__(
        self,
        base_url: str = INTEL_PCS_URL,
        *,
        update: str = "early",
        timeout: float = 30.0,
        tee: DcapTee = TDX,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"collateral service URL must be http(s): {base_url!r}")
        if update not in UPDATE_TYPES:
            raise ValueError(f"tcb update type must be one of {UPDATE_TYPES}")
        self._origin = f"{parts.scheme}://{parts.netloc}/"
        self._is_intel = parts.hostname == "api.trustedservices.intel.com"
        self._update = update
        self._timeout = timeout
        self._tee = tee

    def _get(self, url: str, chain_headers: tuple[str, ...] = ()) -> tuple[bytes, bytes | None]:
        try:
            with urllib.request.urlopen(url, timeout=self._timeout) as response:  # noqa: S310
                body: bytes = response.read(MAX_RESPONSE_SIZE + 1)
                chain = next((response.headers[h] for h in chain_headers if h in response.headers), None)
        except urllib.error.HTTPError as exc:
            raise _unavailable(f"{url} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise _unavailable(f"{url}: {exc}") from None
        if len(body) > MAX_RESPONSE_SIZE:
            raise _unavailable(f"{url} answered more than {MAX_RESPONSE_SIZE} bytes")
        return body, unquote(chain).encode() if chain is not None else None

    def fetch(self, fmspc: bytes, ca: str) -> RawCollateral:
        base, update = self._origin, urlencode({"update": self._update})
        tcb_query = urlencode({"fmspc": fmspc.hex().upper(), "update": self._update})
        api = f"{base}{self._tee.name}/certification/v4"
        tcb, tcb_chain = self._get(f"{api}/tcb?{tcb_query}", TCB_INFO_CHAIN_HEADERS)
        qe, qe_chain = self._get(f"{api}/qe/identity?{update}", QE_IDENTITY_CHAIN_HEADERS)
        crl_query = urlencode({"ca": ca, "encoding": "der"})
        crl, crl_chain = self._get(f"{base}sgx/certification/v4/pckcrl?{crl_query}", PCK_CRL_CHAIN_HEADERS)
        root_url = INTEL_ROOT_CA_CRL_URL if self._is_intel else f"{base}sgx/certification/v4/rootcacrl"
        root, _ = self._get(root_url)
        return RawCollateral(
            tcb_info=tcb,
            qe_identity=qe,
            tcb_info_issuer_chain=tcb_chain,
            qe_identity_issuer_chain=qe_chain,
            pck_crl=crl_der(crl),
            pck_crl_issuer_chain=crl_chain,
            root_ca_crl=crl_der(root),
        )


def _compact(inner_key: str, document: Mapping[str, Any]) -> bytes:
    """A collateral document re-serialized as PCS sends it (compact, key order kept), which is
    the form Intel signed: the PCS Client Tool stores documents as parsed JSON."""
    return json.dumps(
        {inner_key: document[inner_key], "signature": document["signature"]},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")


def parse_pcs_client_tool(
    data: bytes, fmspc: bytes, ca: str, update: str = "early", tee: DcapTee = TDX
) -> RawCollateral:
    """`tee`'s collateral for one platform out of a PCS Client Tool `{"collaterals": {...}}` file."""
    try:
        collaterals = json.loads(data)["collaterals"]
        entry = next(
            (e for e in collaterals["tcbinfos"] if bytes.fromhex(e["fmspc"]) == fmspc),
            None,
        )
        if entry is None:
            raise _unavailable(f"the collateral file has no TCB info for FMSPC {fmspc.hex()}")
        early = update == "early"
        tcb_key, qe_key = f"{tee.name}_tcbinfo", tee.tool_qe_identity
        tcb = (early and entry.get(f"{tcb_key}_early")) or entry.get(tcb_key)
        qe = (early and collaterals.get(f"{qe_key}_early")) or collaterals.get(qe_key)
        if not tcb or not qe:
            raise _unavailable(
                f"the collateral file lacks {tee.tcb_info_id} TCB info or {tee.qe_identity_id} identity "
                f"for {fmspc.hex()}"
            )
        certs = collaterals["certificates"]
        crl_chains = certs.get("SGX-PCK-Certificate-Issuer-Chain") or {}
        crl_chain = crl_chains.get(ca.upper())
        return RawCollateral(
            tcb_info=_compact("tcbInfo", tcb),
            qe_identity=_compact("enclaveIdentity", qe),
            tcb_info_issuer_chain=unquote(certs["TCB-Info-Issuer-Chain"]).encode(),
            qe_identity_issuer_chain=unquote(certs["SGX-Enclave-Identity-Issuer-Chain"]).encode(),
            # A PCK CRL is only usable with its issuer chain, which the tool does not always write.
            pck_crl=bytes.fromhex(collaterals["pckcacrl"][f"{ca}Crl"]) if crl_chain else None,
            pck_crl_issuer_chain=unquote(crl_chain).encode() if crl_chain else None,
            root_ca_crl=bytes.fromhex(collaterals["rootcacrl"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise CollateralError(f"collateral file is not PCS Client Tool output: {exc!r}") from None


class OfflineSource:
    """A PCS Client Tool collateral file, for sites without access to Intel's PCS."""

    def __init__(self, path: Path, *, update: str = "early", tee: DcapTee = TDX) -> None:
        self._path = path
        self._update = update
        self._tee = tee

    def fetch(self, fmspc: bytes, ca: str) -> RawCollateral:
        try:
            data = self._path.read_bytes()
        except OSError as exc:
            raise _unavailable(f"cannot read {self._path}: {exc}") from None
        return parse_pcs_client_tool(data, fmspc, ca, self._update, self._tee)


class DirectorySource:
    """A folder of collateral as PCS serves it, for offline checks: `tcbInfo.json` and
    `enclaveIdentity.json` (the response bodies), and when they were saved too, their issuer
    chains `tcbInfo-issuer-chain.pem` and `enclaveIdentity-issuer-chain.pem`, the PCK CRL
    `pckcrl-<platform|processor>.der` with `pckcrl-issuer-chain.pem`, and `rootcacrl.der`."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def _read(self, name: str) -> bytes | None:
        try:
            return (self._folder / name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _unavailable(f"cannot read {self._folder / name}: {exc.strerror}") from None

    def _required(self, name: str) -> bytes:
        data = self._read(name)
        if data is None:
            raise _unavailable(f"{self._folder} has no {name}")
        return data

    def fetch(self, fmspc: bytes, ca: str) -> RawCollateral:
        tcb_info, qe_identity = self._required("tcbInfo.json"), self._required("enclaveIdentity.json")
        pck_crl, pck_crl_chain = self._read(f"pckcrl-{ca}.der"), self._read("pckcrl-issuer-chain.pem")
        root_crl = self._read("rootcacrl.der")
        return RawCollateral(
            tcb_info=tcb_info,
            qe_identity=qe_identity,
            tcb_info_issuer_chain=self._read("tcbInfo-issuer-chain.pem"),
            qe_identity_issuer_chain=self._read("enclaveIdentity-issuer-chain.pem"),
            pck_crl=crl_der(pck_crl) if pck_crl is not None and pck_crl_chain is not None else None,
            pck_crl_issuer_chain=pck_crl_chain if pck_crl is not None else None,
            root_ca_crl=crl_der(root_crl) if root_crl is not None else None,
        )


def source_from_config(
    collateral_service: str = INTEL_PCS_URL, tcb_update_type: str = "early", tee: DcapTee = TDX
) -> CollateralSource | None:
    """Upstream's `dcap_verifier` settings: a PCS/PCCS URL, or `file://<path>` for an offline file;
    ours: `dir://<path>` for a folder of PCS responses (`DirectorySource`), `none` for no source."""
    if collateral_service == "none":
        return None
    if collateral_service.startswith("dir://"):
        return DirectorySource(Path(unquote(collateral_service.removeprefix("dir://"))))
    if collateral_service.startswith("file://"):
        path = Path(unquote(urlsplit(collateral_service).path))
        return OfflineSource(path, update=tcb_update_type, tee=tee)
    return PcsSource(collateral_service, update=tcb_update_type, tee=tee)
