"""The pod VM's confidential data hub (CDH): upstream's ttRPC API on
/run/confidential-containers/cdh.sock for kata-agent (and the stand-in agent): KBS resources after
attestation, layer-key unwrapping for encrypted images, and guest image pulls that check the image
signature policy first and decrypt encrypted layers.
"""
