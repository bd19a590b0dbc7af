"""ttrpc: containerd's lightweight RPC over stream sockets, as Kata's shim and agent speak it.

`frames` is the sans-IO wire codec, `envelope` the Request/Response messages, `server`,
`client` and `relay` the thin asyncio layers on top.
"""
