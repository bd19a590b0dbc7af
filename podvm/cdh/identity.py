"""`signedIdentity` rules: does the identity a signature names (`docker-reference`) fit the image
being pulled (image-rs `ref_match.rs`, containers-policy.json(5))."""

from __future__ import annotations

from typing import Any

from podvm.cdh.errors import PullError
from podvm.cdh.reference import ImageReference, parse_reference

MATCH_REFERENCE_FAILED = "Match reference failed."


class IdentityMismatch(Exception):
    """The signed identity does not fit; the message is image-rs's."""


def check_identity(rule: dict[str, Any], image: ImageReference, signed: str) -> None:
    kind = rule.get("type")
    if kind == "matchExact":
        if image.digest is not None:
            raise IdentityMismatch("Can not reference the image with the digest in matchExact policy.")
        _require(str(image) == _whole(signed))
    elif kind == "matchRepoDigestOrExact":
        _repo_digest_or_exact(image, signed)
    elif kind == "matchRepository":
        _require(image.name == _repository(signed))
    elif kind == "exactReference":
        _require(signed == rule.get("dockerReference"))
    elif kind == "exactRepository":
        _require(_repository(signed) == rule.get("dockerRepository"))
    elif kind == "remapIdentity":
        prefix, signed_prefix = rule.get("prefix"), rule.get("signedPrefix")
        if not isinstance(prefix, str) or not isinstance(signed_prefix, str):
            raise IdentityMismatch("remapIdentity needs prefix and signedPrefix")
        whole = str(image)
        if whole.startswith(prefix):
            whole = signed_prefix + whole[len(prefix) :]
        try:
            remapped = parse_reference(whole)
        except PullError:
            raise IdentityMismatch(MATCH_REFERENCE_FAILED) from None
        _repo_digest_or_exact(remapped, signed)
    else:
        raise IdentityMismatch("The reference match policy type name is Unknown.")


def _repo_digest_or_exact(image: ImageReference, signed: str) -> None:
    if image.digest is None:
        _require(str(image) == _whole(signed))
    else:
        _require(image.name == _repository(signed))


def _require(condition: bool) -> None:
    if not condition:
        raise IdentityMismatch(MATCH_REFERENCE_FAILED)


def _whole(signed: str) -> str:
    try:
        return str(parse_reference(signed))
    except PullError:
        raise IdentityMismatch(MATCH_REFERENCE_FAILED) from None


def _repository(signed: str) -> str:
    try:
        return parse_reference(signed).name
    except PullError:
        raise IdentityMismatch(MATCH_REFERENCE_FAILED) from None
