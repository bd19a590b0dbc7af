"""ocicrypt, the sans-IO parts: layer key packets, KEK wrapping and the layer cipher.

What the key provider (`peerpods-keyprovider`, on the image owner's machine) and the pod VM's
confidential data hub share: the key-provider protocol's JSON messages (`keyprovider`), CoCo's
annotation packet (`packet`), KEK wrap/unwrap (`keywrap`), the layer cipher options and the
AES-256-CTR + HMAC-SHA256 layer stream (`layer`). Formats follow Go ocicrypt and guest-components.
"""
