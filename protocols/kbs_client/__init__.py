"""The guest side of the KBS protocol (RCAR 0.4.0): attest, then fetch and decrypt resources.

It lives beside the protocol's message types so that the pod VM's attestation agent and the
`kbs-client` command can both use it without either depending on the other.
"""
