"""`python -m tests.e2e`: whether the end-to-end tests will run here, and on what (CI prints it)."""

from tests.e2e.conftest import choose_domain_type
from tests.e2e.worker_node import podnet_problem

chosen, why = choose_domain_type()
network = podnet_problem()
podnet = (
    "the pod network test skips: " + network
    if network
    else "pod network on a libvirt network in a worker netns"
)
print(f"will run on libvirt domain type {chosen} ({why}); {podnet}" if chosen else f"will be skipped: {why}")
