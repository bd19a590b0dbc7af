"""apf.json's `pod-network` object read and written as upstream's Go code does (no root needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.podnet.config import PodNetwork, PodNetworkError, Route

# upstream's podvm/hack/smoke_test.sh example, compact as Go's encoder writes it
SMOKE_TEST = (
    '{"podip":"10.244.1.21/24","pod-hw-addr":"32:b9:59:6b:f0:d5","interface":"eth0",'
    '"worker-node-ip":"10.224.0.5/16","tunnel-type":"vxlan","routes":['
    '{"dst":"0.0.0.0/0","gw":"10.244.1.1","dev":"eth0","protocol":"boot"},'
    '{"dst":"10.244.1.0/24","gw":"","dev":"eth0","protocol":"kernel","scope":"link"}],'
    '"neighbors":null,"mtu":1500,"index":2,"vxlan-port":8472,"vxlan-id":555002,"dedicated":false,'
    '"external-net-via-pod-vm":false}'
)


def test_upstream_example_round_trips_byte_for_byte() -> None:
    network = PodNetwork.from_document(json.loads(SMOKE_TEST))
    assert str(network.pod_ip) == "10.244.1.21/24"
    assert network.vxlan_port == 8472
    assert network.pod_mtu == 1450
    assert json.dumps(network.to_document(), separators=(",", ":")) == SMOKE_TEST


def test_old_capitalised_keys_are_read_as_go_does() -> None:
    route = Route.from_document({"Dst": "", "GW": "10.244.0.1", "Dev": "eth0"}, "routes[0]")
    assert route.dst is None
    assert str(route.gw) == "10.244.0.1"
    assert route.dev == "eth0"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tunnel-type": "routing"}, 'unknown tunnel type: \'routing\''),
        ({"routes": [{"dst": "0.0.0.0/0", "protocol": "bgp"}]}, "unknown route protocol: bgp"),
        ({"routes": [{"dst": "0.0.0.0/0", "scope": "galaxy"}]}, "unknown route scope: galaxy"),
        ({"podip": "10.244.1.21"}, "podip: must be an IPv4 address with its prefix length"),
        ({"pod-hw-addr": "zz"}, "pod-hw-addr: must be a MAC address"),
        ({"interface": "a" * 16}, "interface: not an interface name"),
        ({"interface": "eth0\n"}, "interface: not an interface name"),
        ({"mtu": 1e999}, "mtu: must be an integer"),
        ({"vxlan-id": 2**64}, "vxlan-id: must be an integer"),
        ({"neighbors": [{"ip": "10.0.0.1", "hw-addr": "32:b9:59:6b:f0:d5", "dev": "eth0", "state": "x"}]},
         "unknown neighbor state: x"),
    ],
)  # fmt: skip
def test_bad_fields_are_refused_with_the_field_named(change: dict[str, Any], message: str) -> None:
    document = {**json.loads(SMOKE_TEST), **change}
    with pytest.raises(PodNetworkError, match=message.replace("(", r"\(")):
        PodNetwork.from_document(document)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(list(json.loads(SMOKE_TEST))), json_values, max_size=6))
def test_any_document_loads_or_gives_a_typed_error(change: dict[str, Any]) -> None:
    try:
        network = PodNetwork.from_document({**json.loads(SMOKE_TEST), **change})
    except PodNetworkError:
        return
    assert PodNetwork.from_document(network.to_document()) == network
