"""The end-to-end stack on one host: libvirtd, a scratch storage pool with the pod VM image, the
`cloud-api-adaptor libvirt` process (QEMU user-mode networking, so the host only sees loopback
traffic; or, for the pod network, a libvirt network inside a worker namespace: `worker_node`), the
serial consoles of its VMs, and checks that nothing is left afterwards.

Shared by tests/e2e and bench/boot.py. Everything here is named after one run id, so a run only
ever looks at (and removes) what it made itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podvm.image.build import BuildResult
from protocols.initdata import encode_initdata
from providers.base import OWNER_TAG, SANDBOX_TAG
from providers.libvirt.domain_xml import read_metadata
from tests.adaptor_process import AdaptorProcess

URI = "qemu:///system"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
TOOLS = ("qemu-system-x86_64", "qemu-img", "libvirtd", "virtlogd", "debootstrap", "mkfs.fat", "mcopy",
         "sfdisk", "objcopy", "mkfs.ext4")  # fmt: skip
# Where scratch pools go: libvirt's QEMU runs as its own user and must reach the files.
POOL_PARENT = Path("/var/lib/peerpods-e2e")
NVRAM_DIR = Path("/var/lib/libvirt/qemu/nvram")
BOOT_MARK = re.compile(r"peerpods-boot: (?P<step>[\w-]+) uptime=(?P<uptime>[\d.]+)")


def tool_problem() -> str | None:
    """Why the image cannot be built or booted here, or None."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, libvirtd)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (scripts/bootstrap installs them as root)"
    if not (OVMF_CODE.exists() and OVMF_VARS.exists()):
        return f"{OVMF_CODE} or {OVMF_VARS} is missing (Debian package ovmf)"
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "libvirt-python is not installed (libvirt extra)"
    return None


def kvm_problem(probe_seconds: float = 3.0) -> str | None:
    """Why /dev/kvm cannot run the pod VM here, or None.

    Opening /dev/kvm is not enough: nested hypervisors such as kvm-pvm accept KVM_CREATE_VM but fail
    on a standard guest's firmware. So QEMU boots OVMF on KVM for a moment; a KVM internal error or
    an early exit means the device is not usable.
    """
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError as exc:
        return f"/dev/kvm is not usable: {exc.strerror}"
    os.close(fd)
    pvm = Path("/sys/module/kvm_pvm").exists()
    with tempfile.TemporaryDirectory(prefix="pp-kvm-probe-") as scratch:
        variables = Path(scratch) / "vars.fd"
        shutil.copyfile(OVMF_VARS, variables)
        command = [
            "qemu-system-x86_64", "-accel", "kvm", "-machine", "q35", "-m", "128", "-display", "none",
            "-no-user-config", "-nodefaults", "-serial", "none",
            "-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,file={variables}",
        ]  # fmt: skip
        try:
            probe = subprocess.run(command, capture_output=True, timeout=probe_seconds, check=False)
            output, status = probe.stderr, f"exit status {probe.returncode}"
        except subprocess.TimeoutExpired as running:
            # QEMU keeps running (paused) after a KVM internal error: look at what it said.
            output, status = running.stderr or b"", "stopped"
            if b"KVM internal error" not in output and b"emulation failure" not in output:
                return None  # still running the firmware: KVM works
        except OSError as exc:
            return f"cannot run qemu-system-x86_64: {exc.strerror}"
    lines = [line for line in output.decode(errors="replace").splitlines() if "warning" not in line]
    detail = lines[0].strip()[:120] if lines else status
    kind = "kvm-pvm (nested, paravirtual-only) " if pvm else ""
    return f"/dev/kvm is {kind}KVM that cannot boot a standard UEFI guest: QEMU stopped with: {detail}"


# -- libvirtd -------------------------------------------------------------------------------------


def connect(uri: str = URI) -> Any:
    import libvirt

    # Errors are handled where they are caught; libvirt would also print each one on stderr.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt.open(uri)


@contextlib.contextmanager
def kvm_group_access() -> Iterator[None]:
    """/dev/kvm as udev sets it on a standard Debian host (group kvm, mode 0660), for the run.

    Without udev the node stays root-only; libvirt's QEMU user (in group kvm) then cannot open it,
    and libvirt re-probes QEMU's capabilities on every domain define (over a minute each here).
    The original owner and mode are restored afterwards.
    """
    kvm = Path("/dev/kvm")
    try:
        before = kvm.stat()
        group = grp.getgrnam("kvm").gr_gid
    except (OSError, KeyError):
        yield
        return
    if before.st_gid == group and before.st_mode & 0o060 == 0o060:
        yield
        return
    os.chown(kvm, -1, group)
    os.chmod(kvm, (before.st_mode & 0o7777) | 0o060)
    try:
        yield
    finally:
        os.chown(kvm, -1, before.st_gid)
        os.chmod(kvm, before.st_mode & 0o7777)


def wait_for_libvirtd(uri: str, processes: list[subprocess.Popen[bytes]], timeout_s: float = 30) -> bool:
    """Whether the libvirtd at `uri` answers within `timeout_s`; False as soon as one of the
    `processes` serving it exits."""
    import libvirt

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            connect(uri).close()
            return True
        except libvirt.libvirtError:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                return False
            time.sleep(0.1)


def terminate(process: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `timeout_s`."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class LibvirtDaemon:
    """libvirtd (and virtlogd), started here unless one already answers; stopped only if started."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __enter__(self) -> LibvirtDaemon:
        if wait_for_libvirtd(URI, [], timeout_s=0):
            return self
        for daemon in ("virtlogd", "libvirtd"):
            self.started.append(
                subprocess.Popen([daemon], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        if not wait_for_libvirtd(URI, self.started):
            self.__exit__()
            raise RuntimeError("libvirtd did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self.started):
            terminate(process)
        self.started.clear()


# -- storage pool with the base image -------------------------------------------------------------


def _pool_xml(name: str, path: Path) -> str:
    return f"<pool type='dir'><name>{name}</name><target><path>{path}</path></target></pool>"


def _volume_xml(name: str, size: int, fmt: str = "qcow2") -> str:
    return (
        f"<volume><name>{name}</name><capacity unit='bytes'>{size}</capacity>"
        f"<target><format type='{fmt}'/></target></volume>"
    )


@dataclass
class ScratchPool:
    """A transient dir pool holding the image's volumes (base disk, direct-boot kernel and initrd);
    removed with everything in it."""

    name: str
    path: Path
    base_volume: str
    kernel_volume: str
    initrd_volume: str
    kernel_cmdline: str

    @property
    def image_volumes(self) -> tuple[str, ...]:
        return (self.base_volume, self.kernel_volume, self.initrd_volume)

    @classmethod
    def create(cls, run_id: str, image: BuildResult) -> ScratchPool:
        path = POOL_PARENT / run_id
        path.mkdir(parents=True, mode=0o755)
        POOL_PARENT.chmod(0o755)
        pool = cls(
            f"peerpods-e2e-{run_id}", path, "podvm-base.qcow2", "podvm-vmlinuz", "podvm-initrd.img",
            image.direct_cmdline(),
        )  # fmt: skip
        conn = connect()
        try:
            libvirt_pool = conn.storagePoolCreateXML(_pool_xml(pool.name, path), 0)
            for name, source, fmt in (
                (pool.base_volume, image.qcow2, "qcow2"),
                (pool.kernel_volume, image.kernel, "raw"),
                (pool.initrd_volume, image.initrd, "raw"),
            ):
                volume = libvirt_pool.createXML(_volume_xml(name, source.stat().st_size, fmt), 0)
                _upload(conn, volume, source)
            libvirt_pool.refresh(0)
        except BaseException:
            pool.remove()
            raise
        finally:
            conn.close()
        return pool

    def share_with(self, uri: str) -> None:
        """The same directory, with the base volume in it, as a transient pool of the libvirtd at
        `uri` (one of a worker node's own); it goes when that daemon stops."""
        conn = connect(uri)
        try:
            conn.storagePoolCreateXML(_pool_xml(self.name, self.path), 0)
        finally:
            conn.close()

    def volumes(self) -> list[str]:
        conn = connect()
        try:
            pool = conn.storagePoolLookupByName(self.name)
            pool.refresh(0)
            return sorted(pool.listVolumes())
        finally:
            conn.close()

    def remove(self) -> None:
        import libvirt

        conn = connect()
        try:
            pool = conn.storagePoolLookupByName(self.name)
            for volume in pool.listAllVolumes(0):
                volume.delete(0)
            pool.destroy()
        except libvirt.libvirtError:
            pass
        finally:
            conn.close()
        shutil.rmtree(self.path, ignore_errors=True)


def _upload(conn: Any, volume: Any, image: Path) -> None:
    """Stream the image file into the volume, as `virsh vol-upload` does."""
    stream = conn.newStream(0)
    volume.upload(stream, 0, image.stat().st_size, 0)
    with image.open("rb") as source:
        stream.sendAll(lambda _stream, nbytes, _opaque: source.read(nbytes), None)
    stream.finish()


# -- serial consoles ------------------------------------------------------------------------------


@dataclass
class ConsoleLine:
    at: float  # time.monotonic() when the host read it
    text: str


@dataclass
class Console:
    """The serial console of one domain, read from libvirt in a thread, each line timestamped."""

    domain_name: str
    lines: list[ConsoleLine] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, domain: Any, conn: Any) -> None:
        stream = conn.newStream(0)
        domain.openConsole(None, stream, 0)
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        pending = b""
        while not self._stop.is_set():
            try:
                data = stream.recv(4096)
            except Exception:  # the domain went away: the stream ends with an error
                break
            if not isinstance(data, bytes) or not data:
                break
            now = time.monotonic()
            pending += data
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                text = raw.decode(errors="replace").strip("\r\x1b")
                self.lines.append(ConsoleLine(now, text))
        with contextlib.suppress(Exception):
            stream.abort()

    def stop(self) -> None:
        self._stop.set()

    def marks(self) -> dict[str, tuple[float, float]]:
        """First host time and guest uptime of each `peerpods-boot: <step>` mark."""
        found: dict[str, tuple[float, float]] = {}
        for line in self.lines:
            match = BOOT_MARK.search(line.text)
            if match and match.group("step") not in found:
                found[match.group("step")] = (line.at, float(match.group("uptime")))
        return found

    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


class ConsoleWatcher:
    """Attaches a `Console` to each new domain of `owner` as soon as it is defined."""

    def __init__(self, owner: str, poll_s: float = 0.02, uri: str = URI) -> None:
        self.owner = owner
        self.uri = uri
        self.poll_s = poll_s
        self.consoles: dict[str, Console] = {}  # by sandbox id
        self.defined_at: dict[str, float] = {}  # by sandbox id: when first seen running
        self.domain_names: list[str] = []  # every domain of `owner` seen, console or not
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> ConsoleWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for console in self.consoles.values():
            console.stop()

    def _watch(self) -> None:
        import libvirt

        conn = connect(self.uri)
        try:
            while not self._stop.is_set():
                for domain in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                    with contextlib.suppress(libvirt.libvirtError):
                        self._attach(conn, domain)
                time.sleep(self.poll_s)
        finally:
            conn.close()

    def _attach(self, conn: Any, domain: Any) -> None:
        name = domain.name()
        if any(console.domain_name == name for console in self.consoles.values()):
            return
        metadata = read_metadata(domain.XMLDesc(0))
        if metadata is None or metadata.tags.get(OWNER_TAG) != self.owner:
            return
        sandbox_id = metadata.tags.get(SANDBOX_TAG, name)
        if name not in self.domain_names:
            self.domain_names.append(name)
            self.defined_at[sandbox_id] = time.monotonic()
        console = Console(name)  # the PTY may not be assigned yet: then the next poll retries
        console.start(domain, conn)
        self.consoles[sandbox_id] = console


# -- the KBS -------------------------------------------------------------------------------------

# The guest reaches the host's loopback through QEMU user-mode networking's gateway address.
SLIRP_HOST = "10.0.2.2"


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class HostKbs:
    """The `kbs` command on 127.0.0.1, trusting the sample TEE and holding one secret resource.

    Policies and the resource are written to its LocalFs storage before it starts, as an operator
    would through the admin API: an attestation policy that appraises the sample TEE as affirming
    (for this test only) and a resource policy that releases resources to affirming TEEs.
    """

    directory: Path
    resource: str
    secret: bytes
    port: int = field(default_factory=free_loopback_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def guest_url(self) -> str:
        return f"http://{SLIRP_HOST}:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "kbs.log"

    def __enter__(self) -> HostKbs:
        from kbs.config import build_broker, parse_config
        from kbs.store import ResourcePath
        from tests.kbs.support import AFFIRMING_POLICY, SAMPLE_TRUSTING_POLICY, AdminKey, config_text

        self.directory.mkdir(parents=True, exist_ok=True)
        admin = AdminKey.create(self.directory)
        text = config_text(self.directory / "storage", admin.path, sockets=f"127.0.0.1:{self.port}")
        config_file = self.directory / "kbs.toml"
        config_file.write_text(text)
        broker = build_broker(parse_config(text))

        async def seed() -> None:
            await broker.start()
            try:
                await broker.attestation.set_policy("default_cpu", SAMPLE_TRUSTING_POLICY)
                await broker.policy.set(AFFIRMING_POLICY)
                await broker.store.put(ResourcePath.parse(self.resource.split("/")), self.secret)
            finally:
                broker.policy.release()
                await broker.close()

        asyncio.run(seed())
        binary = Path(sys.executable).with_name("kbs")
        self.process = subprocess.Popen(
            [str(binary), "-c", str(config_file)], stdout=subprocess.DEVNULL, stderr=self.log.open("ab")
        )
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"kbs did not start:\n{self.log.read_text()}")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def kbs_initdata(kbs_url: str) -> str:
    """Initdata (base64 gzip TOML, the adaptor's INITDATA) pointing the guest's agents at the KBS."""
    toml = f"""algorithm = "sha256"
version = "0.1.0"

[data]
"aa.toml" = '''
[token_configs.kbs]
url = "{kbs_url}"
'''
"cdh.toml" = '''
socket = "unix:///run/confidential-containers/cdh.sock"
[kbc]
name = "cc_kbc"
url = "{kbs_url}"
'''
"""
    return encode_initdata(toml)


# -- the adaptor ----------------------------------------------------------------------------------


class LibvirtAdaptor(AdaptorProcess):
    """`cloud-api-adaptor libvirt` as a process, its state in `directory`, its instances tagged `owner`."""

    def __init__(self, directory: Path, owner: str, env: Mapping[str, str], netns: str = "") -> None:
        super().__init__(directory, {**os.environ, **env}, "libvirt", ("--owner", owner), netns=netns)
        self.owner = owner


def adaptor_env(
    pool: ScratchPool,
    domain_type: str = "kvm",
    uri: str = URI,
    network: str = "",
    direct_boot: bool = True,
    **extra: str,
) -> dict[str, str]:
    """The libvirt provider's settings for a run: scratch pool, small VMs, the libvirt `network` if
    one is named, else user-mode networking, and direct kernel boot unless told to boot OVMF."""
    boot = {
        "LIBVIRT_KERNEL_VOL_NAME": pool.kernel_volume,
        "LIBVIRT_INITRD_VOL_NAME": pool.initrd_volume,
        "LIBVIRT_KERNEL_CMDLINE": pool.kernel_cmdline,
    }
    env = {
        "LIBVIRT_URI": uri,
        "LIBVIRT_POOL": pool.name,
        "LIBVIRT_VOL_NAME": pool.base_volume,
        **({"LIBVIRT_NET": network} if network else {"LIBVIRT_USER_NETWORK": "true"}),
        "DISABLECVM": "true",
        "LIBVIRT_CPU": "2",
        "LIBVIRT_MEMORY": "1024",
        "LIBVIRT_EFI_FIRMWARE": str(OVMF_CODE),
        **(boot if direct_boot else {}),
        **extra,
    }
    if domain_type != "kvm":
        env["LIBVIRT_DOMAIN_TYPE"] = domain_type
    return env


def new_run_id() -> str:
    return secrets.token_hex(4)


# -- what must be gone afterwards -----------------------------------------------------------------


def leftovers(
    owner: str,
    domain_names: list[str],
    pool: ScratchPool | None = None,
    uri: str = URI,
    nvram_dir: Path = NVRAM_DIR,
) -> list[str]:
    """What a run left: domains of `owner` at `uri`, volumes besides the base one, and QEMU
    processes or NVRAM files (in `nvram_dir`) of the domains it made."""
    conn = connect(uri)
    found: list[str] = []
    try:
        for domain in conn.listAllDomains(0):
            metadata = read_metadata(domain.XMLDesc(0))
            if metadata is not None and metadata.tags.get(OWNER_TAG) == owner:
                found.append(f"domain {domain.name()}")
    finally:
        conn.close()
    if pool is not None:
        found += [f"volume {v}" for v in pool.volumes() if v not in pool.image_volumes]
    names = set(domain_names)
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            words = cmdline.read_bytes().decode(errors="replace").split("\0")
            if "qemu-system" in words[0] and any(
                f"guest={name}," in word or word == f"guest={name}" for word in words for name in names
            ):
                found.append(f"QEMU process {cmdline.parent.name}")
    found += [f"NVRAM {path}" for name in names for path in nvram_dir.glob(f"{name}_VARS*")]
    return found


@contextlib.contextmanager
def scratch_dir(run_id: str) -> Iterator[Path]:
    """A short directory for sockets (unix socket paths must stay under 108 bytes)."""
    path = Path("/tmp") / f"pp-e2e-{run_id}"
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
