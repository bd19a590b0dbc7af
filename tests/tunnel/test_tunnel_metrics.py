"""`peerpods_tunnel_redials_total`: dials of a pod VM after its tunnel had been up, not first dials."""

from __future__ import annotations

from prometheus_client import REGISTRY

from protocols.agent import HEALTH_SERVICE
from protocols.proto import health_pb2
from protocols.ttrpc.client import Client
from tests.tunnel.conftest import Tunnel


def redials() -> float:
    return REGISTRY.get_sample_value("peerpods_tunnel_redials_total") or 0.0


async def check(tunnel: Tunnel) -> int:
    async with await Client.connect_unix(tunnel.proxy_socket) as client:
        response = await client.unary(
            HEALTH_SERVICE, "Check", health_pb2.CheckRequest(), health_pb2.HealthCheckResponse, timeout=10
        )
    return response.status


async def test_a_lost_tunnel_counts_one_redial(tunnel: Tunnel) -> None:
    before = redials()
    assert await check(tunnel) == health_pb2.HealthCheckResponse.SERVING
    assert redials() == before, "the first dial (at StartVM) is not a redial"
    live = tunnel.proxy.upstream.current
    assert live is not None
    await live.close()  # the connection to the pod VM is lost; the forwarder is still there
    assert await check(tunnel) == health_pb2.HealthCheckResponse.SERVING
    assert redials() == before + 1
