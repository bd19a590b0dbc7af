"""The keys the `kbs` configuration file may hold: upstream's (Trustee `kbs/src/config.rs` and the
structures it includes), plus the few added here. A key outside them is an error naming the closest
known key (`protocols.strictconfig`), where upstream's serde would have refused it or ignored it.

`[attestation_service]` is checked here for the KBS's own keys only (`type`, `timeout`); the rest is
the attestation service's configuration, whose parser checks it.
"""

from __future__ import annotations

from protocols.strictconfig import ArrayOf, Table

ANY = None  # a value whose content the parser checks (or an upstream table taken whole)

_HTTP_SERVER = Table(
    {
        key: ANY
        for key in (
            "sockets",
            "insecure_http",
            "private_key",
            "certificate",
            "payload_request_size",
            "worker_count",
            "tls_profile",
            "tls_min_version",
            "tls_max_version",
            "tls_ciphers",
            "tls_groups",
            "idle_timeout",  # added here
            "body_timeout",  # added here
        )
    }
)

_ATTESTATION_TOKEN = Table(
    dict.fromkeys(("trusted_jwk_sets", "trusted_certs_paths", "extra_teekey_paths", "insecure_header_jwk"))
)

_STORAGE_BACKEND = Table(
    {
        "storage_type": ANY,
        "backends": Table(
            {
                "local_fs": Table({"dir_path": ANY}),
                "local_json": Table({"file_dir_path": ANY}),
                "postgres": Table(dict.fromkeys(("db", "username", "password", "port", "host"))),
                "redis": Table({"url": ANY}),
            }
        ),
    }
)

# One table for every plugin: the keys differ by `name` and by storage backend type, and an unknown
# key in any of them is still a misspelling of one of these.
_PLUGIN = Table(
    dict.fromkeys(
        (
            "name",
            "storage_backend_type",  # upstream's resource plugin backend
            "type",  # this KBS's resource plugin backend (kept from before)
            "region",
            "endpoint_url",
            "secret_prefix",
            "kms_key_id",
        )
    )
)

_ADMIN = Table(
    {
        "authorization_mode": ANY,
        "authentication": Table(
            {
                "bearer_jwt": Table(
                    {
                        "identity_providers": ArrayOf(
                            Table(dict.fromkeys(("issuer", "audience", "public_key_uri", "jwk_set_uri")))
                        )
                    }
                )
            }
        ),
        "authorization": Table(
            {"regex_acl": Table({"acls": ArrayOf(Table(dict.fromkeys(("role", "allowed_endpoints"))))})}
        ),
    }
)

KBS_CONFIG = Table(
    {
        "http_server": _HTTP_SERVER,
        "attestation_token": _ATTESTATION_TOKEN,
        "attestation_service": Table({"type": ANY, "timeout": ANY}, open=True),
        "storage_backend": _STORAGE_BACKEND,
        "session_storage_type": ANY,
        "plugins": ArrayOf(_PLUGIN),
        "admin": _ADMIN,
    }
)
