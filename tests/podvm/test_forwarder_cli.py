"""`agent-protocol-forwarder` takes upstream's flags, says what it cannot honour; a taken port is one line."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from adaptor.tunnel.authority import TunnelAuthority
from podvm.forwarder.cli import _no_effect, parser
from protocols.apf import ForwarderConfig


def test_upstream_flags_are_accepted() -> None:
    args = parser().parse_args(
        ["-config", "/run/peerpod/apf.json", "-listen", "0.0.0.0:15150", "-kata-agent-socket", "/a.sock",
         "-pod-namespace", "/run/netns/podns", "-host-interface", "ens5", "-ca-cert-file", "ca", "-cert-file",
         "c", "-cert-key", "k", "-tls-skip-verify", "-disable-tls"]
    )  # fmt: skip
    assert args.host_interface == "ens5" and args.tls_skip_verify and args.disable_tls
    assert _no_effect(args) == ["-tls-skip-verify has no effect: client certificates are always verified"]
    assert _no_effect(parser().parse_args([])) == []


def test_a_taken_listen_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    authority = TunnelAuthority.load_or_create(tmp_path / "state")
    vm = authority.issue_server("podvm-x")
    apf = ForwarderConfig(
        tls_server_cert=vm.cert_pem, tls_server_key=vm.key_pem, tls_client_ca=authority.client.cert_pem
    )
    (tmp_path / "apf.json").write_text(apf.to_json())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        done = subprocess.run(
            [str(Path(sys.executable).with_name("agent-protocol-forwarder")),
             "-config", str(tmp_path / "apf.json"), "-listen", listen, "-pod-namespace", "",
             "-tls-skip-verify"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"-listen {listen}: " in errors[0], done.stderr
    assert "-tls-skip-verify has no effect" in done.stderr


def test_disable_tls_is_refused(tmp_path: Path) -> None:
    (tmp_path / "apf.json").write_text(ForwarderConfig().to_json())
    done = subprocess.run(
        [str(Path(sys.executable).with_name("agent-protocol-forwarder")),
         "-config", str(tmp_path / "apf.json"), "-listen", "127.0.0.1:0", "-disable-tls"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert [line.split(" ERROR ", 1)[1] for line in done.stderr.splitlines() if " ERROR " in line] == [
        "agent-protocol-forwarder: -disable-tls is refused: the agent API is only served over mutual TLS"
    ]
