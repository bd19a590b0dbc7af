"""Names of the Kata agent's ttrpc services and their methods, read from our own .proto files."""

from __future__ import annotations

from collections.abc import Mapping

from protocols.proto import agent_pb2, health_pb2

AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

AGENT_METHODS: Mapping[str, frozenset[str]] = {
    service.full_name: frozenset(method.name for method in service.methods)
    for service in (
        agent_pb2.DESCRIPTOR.services_by_name["AgentService"],
        health_pb2.DESCRIPTOR.services_by_name["Health"],
    )
}
