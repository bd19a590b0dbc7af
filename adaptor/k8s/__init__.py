"""The adaptor inside a Kubernetes cluster: node capacity, PeerPod objects, image pull secrets."""
