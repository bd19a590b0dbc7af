"""The network `peerpods-demo` builds as root, all of it inside namespaces it makes and removes:
a worker node (uplink with a default route, a CNI-like bridge) and one pod namespace on that bridge,
so the pod keeps its IP while its container runs in a local pod VM behind the VXLAN tunnel."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
from dataclasses import dataclass

from protocols.podnet.netlink import (
    NETNS_DIR,
    create_namespaces,
    enter_namespace,
    index_of,
    namespace,
    remove_namespaces,
)

WORKER_UPLINK = ipaddress.IPv4Interface("10.253.0.1/24")
CNI_GATEWAY = ipaddress.IPv4Interface("10.252.0.1/24")
POD_IP = ipaddress.IPv4Interface("10.252.0.2/24")


@dataclass(frozen=True)
class DemoNetwork:
    worker: str
    pod: str

    @property
    def worker_path(self) -> str:
        return str(NETNS_DIR / self.worker)

    @property
    def pod_path(self) -> str:
        return str(NETNS_DIR / self.pod)


def create() -> DemoNetwork:
    """The worker and pod namespaces, wired as a CNI would (blocking: netlink)."""
    tag = secrets.token_hex(3)
    net = DemoNetwork(worker=f"ppdemo-{tag}-worker", pod=f"ppdemo-{tag}-pod")
    try:
        create_namespaces(net.worker, net.pod)
        with namespace(net.worker) as worker:
            worker.link("set", index=index_of(worker, "lo"), state="up")
            worker.link("add", ifname="eth0", kind="veth", peer={"ifname": "uplink"})
            for name in ("uplink", "eth0"):
                worker.link("set", index=index_of(worker, name), state="up")
            eth0 = index_of(worker, "eth0")
            worker.addr(
                "add", index=eth0, address=str(WORKER_UPLINK.ip), prefixlen=WORKER_UPLINK.network.prefixlen
            )
            worker.route("add", dst="0.0.0.0/0", oif=eth0)
            worker.link("add", ifname="cni0", kind="bridge")
            cni0 = index_of(worker, "cni0")
            worker.addr(
                "add", index=cni0, address=str(CNI_GATEWAY.ip), prefixlen=CNI_GATEWAY.network.prefixlen
            )
            worker.link("set", index=cni0, state="up")
            worker.link("add", ifname="vethpod", kind="veth", peer={"ifname": "podeth0"})
            worker.link("set", index=index_of(worker, "vethpod"), master=cni0, state="up")
            worker.link("set", index=index_of(worker, "podeth0"), net_ns_fd=net.pod_path)
        with namespace(net.pod_path) as pod:
            pod.link("set", index=index_of(pod, "lo"), state="up")
            eth0 = index_of(pod, "podeth0")
            pod.link("set", index=eth0, ifname="eth0")
            pod.addr("add", index=eth0, address=str(POD_IP.ip), prefixlen=POD_IP.network.prefixlen)
            pod.link("set", index=eth0, state="up")
            pod.route("add", dst="0.0.0.0/0", gateway=str(CNI_GATEWAY.ip))
    except Exception:
        remove(net)
        raise
    return net


def remove(net: DemoNetwork) -> None:
    remove_namespaces(net.pod, net.worker)


def request_from(netns_path: str, address: str, port: int, payload: bytes, timeout_s: float) -> bytes:
    """Connect from inside `netns_path` (a thread of its own enters it), send, read the reply."""
    result: list[bytes] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            enter_namespace(netns_path)
            with socket.create_connection((address, port), timeout=timeout_s) as conn:
                conn.sendall(payload)
                conn.shutdown(socket.SHUT_WR)
                result.append(conn.recv(4096))
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]
