"""The pod network carried into the pod VM: apf.json's `pod-network` object and the VXLAN tunnel
that both ends build from it (worker side in the adaptor, pod VM side in the forwarder)."""
