"""The agent tunnel: the TLS authority for pod VMs and the per-pod agent proxy."""
