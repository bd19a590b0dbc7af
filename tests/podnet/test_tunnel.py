"""Both ends of the pod network tunnel, built by our worker-side and pod-VM-side code in a
test-made topology (upstream's tuntest shape): traffic reaches the pod IPs inside the pod VMs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.podnet.topology import (
    TCP_ECHO,
    Pod,
    PodVM,
    Topology,
    in_ns,
    links,
    needs_netns,
    notrack_rules,
    python_in,
    qdiscs,
    serve_in,
    sh,
    stop_all,
    tcp_request,
    topology,
    udp_request,
)

pytestmark = needs_netns()


def worker_setup(net: Topology, pod: Pod, vm: PodVM, index: int) -> dict[str, object]:
    code = f"""
import json
from pathlib import Path
from adaptor.netsettings import PodNetworkConfig
from adaptor.podnetwork import inspect, setup, tunnel_peer
network = inspect({pod.path!r}, PodNetworkConfig(), {index})
setup({pod.path!r}, network, tunnel_peer(network, [{vm.ip!r}]))
print(json.dumps(network.to_document()))
"""
    document: dict[str, object] = json.loads(python_in(net.worker, code))
    return document


def vm_setup(vm: PodVM, document: dict[str, object]) -> None:
    code = f"""
from protocols.podnet.config import PodNetwork
from podvm.forwarder.podnetwork import setup, wait_for_primary_ip
wait_for_primary_ip(timeout_s=10)
setup(PodNetwork.from_document({document!r}), "/run/netns/{vm.podns}")
"""
    python_in(vm.ns, code)


def worker_teardown(net: Topology, pod: Pod, vm: PodVM, document: dict[str, object]) -> None:
    code = f"""
import ipaddress
from adaptor.podnetwork import teardown
from protocols.podnet.config import PodNetwork
teardown({pod.path!r}, PodNetwork.from_document({document!r}), ipaddress.IPv4Address({vm.ip!r}))
"""
    python_in(net.worker, code)


def vm_teardown(vm: PodVM, document: dict[str, object]) -> None:
    code = f"""
from protocols.podnet.config import PodNetwork
from podvm.forwarder.podnetwork import teardown
teardown(PodNetwork.from_document({document!r}), "/run/netns/{vm.podns}")
"""
    python_in(vm.ns, code)


def test_traffic_reaches_pods_inside_their_vms_and_teardown_leaves_nothing() -> None:
    with topology(pods=3, vms=2) as net:
        pods, vms, client = net.pods[:2], net.vms, net.pods[2]
        documents = [worker_setup(net, pod, vm, i) for i, (pod, vm) in enumerate(zip(pods, vms, strict=True))]
        assert [d["vxlan-id"] for d in documents] == [555000, 555001]
        assert documents[0]["podip"] == "10.128.0.2/24"
        assert documents[0]["worker-node-ip"] == "10.10.0.1/16"
        for vm, document in zip(vms, documents, strict=True):
            vm_setup(vm, document)
        pairs = list(zip(pods, vms, strict=True))
        servers = [serve_in(vm.podns, TCP_ECHO.format(ip=pod.ip, port=8080)) for pod, vm in pairs]
        try:
            for pod in pods:
                assert tcp_request(client.ns, pod.ip, 8080, "hello") == "tcp:hello"
                assert udp_request(client.ns, pod.ip, 8080, "ping") == "udp:ping"
            # pod to pod across VMs
            assert tcp_request(vms[0].podns, pods[1].ip, 8080, "across") == "tcp:across"
            # each pod keeps its MAC and gets the capped MTU in the pod VM
            for pod, vm in zip(pods, vms, strict=True):
                (eth0,) = json.loads(in_ns(vm.podns, "ip", "-j", "link", "show", "eth0").stdout)
                assert eth0["address"] == pod.mac
                assert eth0["mtu"] == 1450
            # a 1400-byte IP packet with DF set crosses the tunnel (20 IP + 8 UDP + 1372)
            assert udp_request(client.ns, pods[0].ip, 8080, "x" * 1372) == "udp:" + "x" * 1372
            rules = notrack_rules(net.worker)
            assert {"-A OUTPUT -j peerpod-OUTPUT", "-A PREROUTING -j peerpod-PREROUTING"} <= set(rules)
            assert sorted(r for r in rules if "NOTRACK" in r) == sorted(
                f'-A peerpod-{chain} {flag} {vm.ip}/32 -p udp -m comment --comment "peerpod [vni:{vni}]" '
                "-m udp --dport 4789 -j NOTRACK"
                for chain, flag in (("OUTPUT", "-d"), ("PREROUTING", "-s"))
                for vm, vni in zip(vms, (555000, 555001), strict=True)
            )
        finally:
            stop_all(servers)
        for pod, vm, document in zip(pods, vms, documents, strict=True):
            worker_teardown(net, pod, vm, document)
            vm_teardown(vm, document)
            assert "vxlan1" not in links(pod.ns)
            assert not qdiscs(pod.ns)
            assert links(vm.podns) == ["lo"]
            assert not notrack_rules(vm.ns)
        assert not notrack_rules(net.worker)
        assert not [name for name in links(net.worker) if name.startswith("ppvxlan")]


def test_teardown_after_the_cni_deleted_the_pod_namespace_leaks_no_rule() -> None:
    with topology(pods=1, vms=1) as net:
        pod, vm = net.pods[0], net.vms[0]
        document = worker_setup(net, pod, vm, 0)
        assert notrack_rules(net.worker)
        net.namespaces.remove(pod.ns)
        sh("ip", "netns", "del", pod.ns)
        worker_teardown(net, pod, vm, document)
        assert not notrack_rules(net.worker)


def test_pod_namespace_that_does_not_exist_is_an_error_and_is_not_created() -> None:
    with topology(pods=0, vms=0) as net:
        code = """
from adaptor.netsettings import PodNetworkConfig
from adaptor.podnetwork import inspect
from protocols.podnet.netlink import NetnsGone
try:
    inspect("/run/netns/pp-no-such-ns", PodNetworkConfig(), 0)
except NetnsGone as exc:
    print(exc)
"""
        assert "does not exist" in python_in(net.worker, code)
        assert not Path("/run/netns/pp-no-such-ns").exists()


@pytest.mark.parametrize("restart", ["worker", "vm"])
def test_setting_up_again_replaces_what_a_killed_process_left(restart: str) -> None:
    """A second setup (adaptor retry, forwarder restart) rebuilds its end instead of failing."""
    with topology(pods=2, vms=1) as net:
        pod, vm, client = net.pods[0], net.vms[0], net.pods[1]
        document = worker_setup(net, pod, vm, 0)
        vm_setup(vm, document)
        if restart == "worker":
            worker_setup(net, pod, vm, 0)
        else:
            vm_setup(vm, document)
        server = serve_in(vm.podns, TCP_ECHO.format(ip=pod.ip, port=8080))
        try:
            assert tcp_request(client.ns, pod.ip, 8080, "again") == "tcp:again"
        finally:
            stop_all([server])
