"""`peerpods-keyprovider`: ocicrypt's key provider for image owners, CoCo-compatible.

skopeo hands it each layer's options (optsdata); it wraps them with a 32-byte KEK (A256GCM by default)
into a CoCo annotation packet whose `kid` names the KBS resource holding the KEK, which the pod VM's
confidential data hub fetches after attestation. The KEK comes from a file and can be uploaded to the
KBS through its admin API.
"""
