"""A throwaway SSH public key for pod VMs when none is configured.

Azure requires an SSH key (or a password) for a Linux VM. Like upstream, when no key file is given we
generate an RSA-4096 key in memory and send only its public half; the private half is never stored or
logged, so nobody can log in with it.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def throwaway_public_key() -> str:
    private = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode("ascii") + " peerpods-throwaway"
