"""The `pod-network` object the adaptor writes for pod namespaces shaped like flannel's, calico's and
the EKS VPC CNI's, compared byte for byte with what upstream's Go encoder writes for them."""

from __future__ import annotations

import json

import pytest

from protocols.podnet.config import PodNetwork
from tests.podnet.topology import Topology, in_ns, needs_netns, python_in, topology

pytestmark = needs_netns()

FLANNEL = (
    '{"podip":"10.128.0.2/24","pod-hw-addr":"0a:58:0a:80:00:02","interface":"eth0",'
    '"worker-node-ip":"10.10.0.1/16","tunnel-type":"vxlan","routes":['
    '{"dst":"0.0.0.0/0","gw":"10.128.0.1","dev":"eth0","protocol":"boot"},'
    '{"dst":"10.128.0.0/24","gw":"","dev":"eth0","protocol":"kernel","scope":"link"},'
    '{"dst":"10.244.0.0/16","gw":"10.128.0.1","dev":"eth0","protocol":"boot"}],'
    '"neighbors":null,"mtu":1450,"index":3,"vxlan-port":4789,"vxlan-id":555003,'
    '"dedicated":false,"external-net-via-pod-vm":false}'
)
CALICO = (
    '{"podip":"10.128.0.2/32","pod-hw-addr":"0a:58:0a:80:00:02","interface":"eth0",'
    '"worker-node-ip":"10.10.0.1/16","tunnel-type":"vxlan","routes":['
    '{"dst":"0.0.0.0/0","gw":"169.254.1.1","dev":"eth0","protocol":"boot"},'
    '{"dst":"169.254.1.1/32","gw":"","dev":"eth0","protocol":"boot","scope":"link"}],'
    '"neighbors":null,"mtu":1480,"index":0,"vxlan-port":4789,"vxlan-id":555000,'
    '"dedicated":false,"external-net-via-pod-vm":false}'
)
EKS = (
    '{"podip":"10.128.0.2/32","pod-hw-addr":"0a:58:0a:80:00:02","interface":"eth0",'
    '"worker-node-ip":"10.10.0.1/16","tunnel-type":"vxlan","routes":['
    '{"dst":"0.0.0.0/0","gw":"169.254.1.1","dev":"eth0","protocol":"boot"},'
    '{"dst":"169.254.1.1/32","gw":"","dev":"eth0","protocol":"boot","scope":"link"}],'
    '"neighbors":[{"ip":"169.254.1.1","hw-addr":"6a:2c:1c:0e:5b:01","dev":"eth0","state":"permanent"}],'
    '"mtu":9001,"index":0,"vxlan-port":4789,"vxlan-id":555000,'
    '"dedicated":false,"external-net-via-pod-vm":false}'
)


def shape(net: Topology, cni: str) -> None:
    """Re-address pod 0 the way `cni` does."""
    ns = net.pods[0].ns
    if cni == "flannel":
        in_ns(ns, "ip", "link", "set", "eth0", "mtu", "1450")
        in_ns(ns, "ip", "route", "add", "10.244.0.0/16", "via", "10.128.0.1", "dev", "eth0")
        return
    in_ns(ns, "ip", "link", "set", "eth0", "mtu", "1480" if cni == "calico" else "9001")
    in_ns(ns, "ip", "addr", "flush", "dev", "eth0")
    in_ns(ns, "ip", "addr", "add", "10.128.0.2/32", "dev", "eth0")
    in_ns(ns, "ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
    in_ns(ns, "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
    if cni == "eks":
        in_ns(
            ns,
            "ip",
            "neigh",
            "add",
            "169.254.1.1",
            "lladdr",
            "6a:2c:1c:0e:5b:01",
            "dev",
            "eth0",
            "nud",
            "permanent",
        )


@pytest.mark.parametrize(
    ("cni", "index", "golden"), [("flannel", 3, FLANNEL), ("calico", 0, CALICO), ("eks", 0, EKS)]
)
def test_pod_network_matches_upstream_json(cni: str, index: int, golden: str) -> None:
    with topology(pods=1, vms=0) as net:
        shape(net, cni)
        code = f"""
import json
from adaptor.netsettings import PodNetworkConfig
from adaptor.podnetwork import inspect
network = inspect({net.pods[0].path!r}, PodNetworkConfig(), {index})
print(json.dumps(network.to_document(), separators=(",", ":")))
"""
        assert python_in(net.worker, code).strip() == golden
        assert PodNetwork.from_document(json.loads(golden)).to_document() == json.loads(golden)
