"""agent-protocol-forwarder: the pod VM end of the agent tunnel (TLS :15150 -> kata-agent socket)."""
