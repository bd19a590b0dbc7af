"""`peerpods-demo` as root shows the pod network: a reply from inside the pod VM at the pod IP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.podnet.topology import needs_netns

pytestmark = needs_netns()


def test_demo_reaches_the_pod_ip_inside_the_pod_vm() -> None:
    demo = Path(sys.executable).with_name("peerpods-demo")
    result = subprocess.run([str(demo)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pod IP 10.252.0.2" in result.stdout
    assert "answered: 'reply from inside the pod VM to a request to the pod IP'" in result.stdout
    assert "pod VMs left after StopVM: 0" in result.stdout
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert "ppdemo-" not in listed and "ppvm-" not in listed
