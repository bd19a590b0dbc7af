"""The pod's image pull secrets as a containers auth.json, for the pod VM (upstream's GetImagePullSecrets).

The pod VM pulls the images itself, so it needs the registry credentials the kubelet would have used:
those of the pod's service account first, then the pod's own (a later secret wins for the same
registry). Both Secret types are read: `.dockerconfigjson` (`{"auths": {...}}`) and the older
`.dockercfg` (`{...}`). Entries keep only `auth` (base64 `user:password`, derived when absent). A
missing secret is skipped, as the kubelet does; a malformed one is skipped with a log line naming
it, never its content.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
from typing import Any

from cluster.kubeapi import ApiError, KubeClient, path_segment

log = logging.getLogger(__name__)

KEYS = (".dockerconfigjson", ".dockercfg")


async def registry_auths(client: KubeClient, namespace: str, pod_name: str) -> dict[str, dict[str, str]]:
    """registry -> {"auth": ...} from the pod's and its service account's pull secrets."""
    base = f"/api/v1/namespaces/{path_segment(namespace)}"
    pod = await client.get(f"{base}/pods/{path_segment(pod_name)}")
    spec = pod.get("spec") or {}
    account_name = spec.get("serviceAccountName") or "default"
    names: list[str] = []
    try:
        account = await client.get(f"{base}/serviceaccounts/{path_segment(account_name)}")
        names += _names(account.get("imagePullSecrets"))
    except ApiError as exc:
        if not exc.not_found:
            raise
    names += _names(spec.get("imagePullSecrets"))
    auths: dict[str, dict[str, str]] = {}
    for name in names:
        try:
            secret = await client.get(f"{base}/secrets/{path_segment(name)}")
        except ApiError as exc:
            if exc.not_found:
                continue
            raise
        try:
            auths.update(_registries(secret.get("data") or {}))
        except ValueError as exc:
            log.warning("image pull secret %s/%s skipped: %s", namespace, name, exc)
    return auths


def merge(auth_json: str, auths: dict[str, dict[str, str]]) -> str:
    """`auths` over the registries of an auth.json text (AUTH_JSON_FILE; checked at start)."""
    base: dict[str, Any] = {}
    if auth_json.strip():
        with contextlib.suppress(ValueError):
            document = json.loads(auth_json)
            if isinstance(document, dict) and isinstance(document.get("auths"), dict):
                base = document
    return json.dumps({**base, "auths": {**base.get("auths", {}), **auths}}, sort_keys=True)


def _names(references: Any) -> list[str]:
    if not isinstance(references, list):
        return []
    return [str(ref["name"]) for ref in references if isinstance(ref, dict) and ref.get("name")]


def _registries(data: dict[str, Any]) -> dict[str, dict[str, str]]:
    for key in KEYS:
        if key in data:
            try:
                document = json.loads(base64.b64decode(data[key], validate=True))
            except (binascii.Error, ValueError, TypeError):
                raise ValueError(f"{key} is not base64 JSON") from None
            entries = (
                document.get("auths")
                if key == ".dockerconfigjson" and isinstance(document, dict)
                else document
            )
            if not isinstance(entries, dict):
                raise ValueError(f"{key} holds no registry map")
            return {registry: {"auth": auth} for registry, creds in entries.items() if (auth := _auth(creds))}
    return {}


def _auth(creds: Any) -> str:
    if not isinstance(creds, dict):
        return ""
    if auth := creds.get("auth"):
        return str(auth)
    username, password = creds.get("username"), creds.get("password")
    if isinstance(username, str) and isinstance(password, str) and username and password:
        return base64.b64encode(f"{username}:{password}".encode()).decode()
    return ""
