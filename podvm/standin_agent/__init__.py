"""A STAND-IN for kata-agent, for tests, benchmarks and the local demo. Not production code.

It answers the Kata agent API on the agent socket well enough to run a pod: Health, sandbox and
container lifecycle, processes with their stdio, CopyFile. Containers are plain child processes
with no isolation whatsoever. Real pod VM images run the upstream kata-agent on the same socket.
"""
