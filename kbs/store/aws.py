"""Resources as AWS Secrets Manager secrets named `<prefix><repo>/<type>/<tag>` (binary values).

Unlike upstream's read-only `Aws` backend (where the tag alone is the SecretId) this one is
read-write, so the admin API manages the secrets; the key that encrypts them at rest is the secret's
KMS key (`kms_key_id`, else the account's `aws/secretsmanager` key). A deleted secret is removed
without the recovery window, so its name can be used again at once. Calls block: run them in a thread.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from kbs.store.base import ResourceNotFound, ResourcePath, StoreError

DEFAULT_PREFIX = "kbs/"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class SecretsManagerStore:
    inline = False

    def __init__(self, client: Any, prefix: str = DEFAULT_PREFIX, kms_key_id: str | None = None) -> None:
        """`client`: a boto3 `secretsmanager` client (region, endpoint and credentials are its own)."""
        self._client = client
        self._prefix = prefix
        self._kms_key_id = kms_key_id

    def _name(self, path: ResourcePath) -> str:
        return f"{self._prefix}{path}"

    def get(self, path: ResourcePath) -> bytes:
        try:
            response = self._client.get_secret_value(SecretId=self._name(path))
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                raise ResourceNotFound(f"resource {path} not found") from None
            raise StoreError(f"Secrets Manager: reading {path}: {_code(exc)}") from None
        except BotoCoreError as exc:
            raise StoreError(f"Secrets Manager: reading {path}: {exc}") from None
        if "SecretBinary" in response:
            return bytes(response["SecretBinary"])
        return str(response.get("SecretString", "")).encode("utf-8")

    def put(self, path: ResourcePath, data: bytes) -> None:
        name = self._name(path)
        try:
            for _ in range(2):  # lost a creation race with another replica: the secret now exists
                try:
                    self._client.put_secret_value(SecretId=name, SecretBinary=data)
                    return
                except ClientError as exc:
                    if _code(exc) != "ResourceNotFoundException":
                        raise
                extra = {"KmsKeyId": self._kms_key_id} if self._kms_key_id else {}
                try:
                    self._client.create_secret(Name=name, SecretBinary=data, **extra)
                    return
                except ClientError as exc:
                    if _code(exc) != "ResourceExistsException":
                        raise
        except ClientError as exc:
            raise StoreError(f"Secrets Manager: writing {path}: {_code(exc)}") from None
        except BotoCoreError as exc:
            raise StoreError(f"Secrets Manager: writing {path}: {exc}") from None
        raise StoreError(f"Secrets Manager: writing {path}: the secret keeps appearing and disappearing")

    def delete(self, path: ResourcePath) -> None:
        """Forced deletion does not report a missing secret, so existence is checked first."""
        try:
            self._client.describe_secret(SecretId=self._name(path))
            self._client.delete_secret(SecretId=self._name(path), ForceDeleteWithoutRecovery=True)
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                raise ResourceNotFound(f"resource {path} not found") from None
            raise StoreError(f"Secrets Manager: deleting {path}: {_code(exc)}") from None
        except BotoCoreError as exc:
            raise StoreError(f"Secrets Manager: deleting {path}: {exc}") from None


class TagSecretsStore(SecretsManagerStore):
    """Upstream's `Aws` resource backend (`storage_backend_type = "Aws"`): read-only, the tag alone
    is the SecretId (`repo/type` ignored); secrets are provisioned through AWS, not the admin API."""

    def __init__(self, client: Any) -> None:
        super().__init__(client, prefix="")

    def _name(self, path: ResourcePath) -> str:
        return path.tag

    def put(self, path: ResourcePath, data: bytes) -> None:
        raise StoreError("the Aws resource backend is read-only: provision secrets through AWS")

    def delete(self, path: ResourcePath) -> None:
        raise StoreError("the Aws resource backend is read-only: provision secrets through AWS")
