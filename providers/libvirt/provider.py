"""The libvirt provider: each pod VM is a libvirt domain with its own overlay disk and cidata image.

Tags map to the domain's `<metadata>` (see `domain_xml`); the instance id is the domain's UUID.
Every libvirt call blocks, so each step runs in a worker thread and the event loop only waits.

Crash safety: names are deterministic, so a create retried after a crash finds the domain of the
same name; if it carries our owner and the same sandbox id it is started if needed and returned.
Volumes left by a crash before the domain was defined are replaced. A create that fails after
making anything removes what it made before raising, so a failed create leaves nothing behind.

User-mode networking (`LIBVIRT_USER_NETWORK`): the VM's agent-protocol-forwarder port is forwarded
from a free port on 127.0.0.1 of the libvirt host (so use it with a local libvirt URI). The
instance then reports `ips=(127.0.0.1,)` and that port as `Instance.forwarder_port`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import libvirt

from providers.base import (
    OWNER_TAG,
    SANDBOX_TAG,
    CreateRequest,
    Instance,
    InstanceNotFound,
    InvalidRequestError,
    IPAddress,
    ProviderError,
)
from providers.libvirt import volumes
from providers.libvirt.cidata import build_cidata_iso, nocloud_meta_data
from providers.libvirt.config import SETTINGS, LibvirtConfig, parse_config, resolve_launch_security
from providers.libvirt.domain_xml import (
    DomainSpec,
    InstanceMetadata,
    LaunchSecurity,
    LibvirtNetwork,
    Network,
    UserNetwork,
    build_domain_xml,
    file_disk_paths,
    read_metadata,
)
from providers.libvirt.scratch import create_scratch_volume, scratch_volume_name
from providers.settings import ConfigError, Setting, SettingValue

_log = logging.getLogger(__name__)

# libvirt raises every error as an exception, which we handle, and also prints it on stderr
# through its default handler; silence the second copy.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

LOOPBACK = ipaddress.IPv4Address("127.0.0.1")
# How often a new VM's DHCP lease is looked for (a local libvirt call; upstream polls every 3 s,
# which would add up to 3 s to a pod start that is a few seconds long on KVM).
IP_POLL_INTERVAL_S = 0.25
# A domain name that is also safe in volume file names; 63 characters like upstream.
_DOMAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # fullmatch: `$` allows a trailing newline
_LEASE = libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE
_AGENT = libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT


def _message(exc: libvirt.libvirtError) -> str:
    return str(exc.get_error_message() or exc)


@contextmanager
def _libvirt_reason(action: str) -> Iterator[None]:
    """Raise libvirt's failures as `ProviderError`, keeping libvirt's own message for the shim."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise ProviderError(f"{action}: {_message(exc)}") from exc


def _free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now, for QEMU to forward. Should another process take it before
    QEMU starts, starting the domain fails with QEMU's reason and the create is rolled back."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((str(LOOPBACK), 0))
        port: int = sock.getsockname()[1]
        return port


def _usable_addresses(interfaces: Mapping[str, Any]) -> tuple[IPAddress, ...]:
    """The addresses in libvirt's interfaceAddresses() answer that others can reach."""
    found: list[IPAddress] = []
    for interface in interfaces.values():
        for entry in interface.get("addrs") or []:
            try:
                address = ipaddress.ip_address(entry.get("addr", ""))
            except ValueError:
                continue
            if not (address.is_loopback or address.is_link_local or address in found):
                found.append(address)
    return tuple(found)


def _domain_addresses(domain: libvirt.virDomain, sources: Sequence[int]) -> tuple[tuple[IPAddress, ...], str]:
    """The domain's addresses from the first source that knows any, and the last error if none does."""
    problem = ""
    for source in sources:
        try:
            addresses = _usable_addresses(domain.interfaceAddresses(source, 0))
        except libvirt.libvirtError as exc:
            problem = _message(exc)
            continue
        if addresses:
            return addresses, ""
    return (), problem


class LibvirtProvider:
    """Pod VMs as libvirt domains. Owns `conn` and closes it in `teardown`."""

    name = "libvirt"

    def __init__(
        self,
        conn: libvirt.virConnect,
        config: LibvirtConfig,
        owner: str,
        *,
        upload: volumes.VolumeUploader = volumes.stream_upload,
        ip_poll_interval_s: float = IP_POLL_INTERVAL_S,
    ) -> None:
        if config.launch_security is None:
            raise ConfigError(["the launch security must be resolved for the host (resolve_launch_security)"])
        self._conn = conn
        self._config = config
        self._security: LaunchSecurity = config.launch_security
        self.owner = owner
        self._upload = upload
        self._poll_interval_s = ip_poll_interval_s

    async def validate(self) -> None:
        """The host was checked when the plugin connected (`check_host`); the connection must still work."""
        with _libvirt_reason(f"libvirt at {self._config.uri}"):
            await asyncio.to_thread(self._conn.getLibVersion)

    async def create_instance(self, request: CreateRequest) -> Instance:
        if not _DOMAIN_NAME.fullmatch(request.name):
            raise InvalidRequestError(
                f"instance name {request.name!r} is not a valid domain name "
                "(letters, digits, '.', '_' and '-', at most 63 characters)"
            )
        if request.spec.vcpus < 0 or request.spec.memory_mib < 0:
            raise InvalidRequestError(
                f"vCPUs ({request.spec.vcpus}) and memory ({request.spec.memory_mib} MiB) "
                "must not be negative"
            )
        domain = await asyncio.to_thread(self._adopt_or_create, request)
        try:
            return await self._ready_instance(domain, request)
        except ProviderError:
            await asyncio.to_thread(self._remove_domain, domain)
            raise

    async def delete_instance(self, instance_id: str) -> None:
        await asyncio.to_thread(self._delete, instance_id)

    async def list_instances(self) -> list[Instance]:
        return await asyncio.to_thread(self._list)

    async def teardown(self) -> None:
        with _libvirt_reason("closing the libvirt connection"):
            await asyncio.to_thread(self._conn.close)

    # -- create ---------------------------------------------------------------------------------

    def _adopt_or_create(self, request: CreateRequest) -> libvirt.virDomain:
        try:
            existing = self._conn.lookupByName(request.name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise ProviderError(f"looking up domain {request.name}: {_message(exc)}") from exc
            return self._create(request)
        return self._adopt(existing, request)

    def _adopt(self, domain: libvirt.virDomain, request: CreateRequest) -> libvirt.virDomain:
        """The domain a crashed create left behind, started, if it is this sandbox's."""
        with _libvirt_reason(f"reading domain {request.name}"):
            metadata = read_metadata(domain.XMLDesc(0))
        tags = metadata.tags if metadata else {}
        if tags.get(OWNER_TAG) != self.owner or tags.get(SANDBOX_TAG) != request.sandbox_id:
            raise InvalidRequestError(
                f"a domain named {request.name} already exists and is not the instance of "
                f"sandbox {request.sandbox_id} owned by {self.owner}"
            )
        with _libvirt_reason(f"starting domain {request.name}"):
            if not domain.isActive():
                domain.create()
        _log.info("adopted existing domain %s for sandbox %s", request.name, request.sandbox_id)
        return domain

    def _create(self, request: CreateRequest) -> libvirt.virDomain:
        name = request.name
        base_name = request.spec.image or self._config.vol_name
        with _libvirt_reason(f"storage pool {self._config.pool}"):
            pool = self._conn.storagePoolLookupByName(self._config.pool)
        try:
            base = pool.storageVolLookupByName(base_name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise ProviderError(f"looking up base volume {base_name!r}: {_message(exc)}") from exc
            raise InvalidRequestError(
                f"base volume {base_name!r} not found in pool {self._config.pool}: {_message(exc)}"
            ) from exc
        boot = self._direct_boot_paths(pool, base_name)
        made: list[str] = []
        domain = None
        try:
            with _libvirt_reason(f"creating volume {volumes.root_volume_name(name)}"):
                overlay = volumes.create_overlay(
                    pool, volumes.root_volume_name(name), base, self._config.root_disk_bytes
                )
                made.append(overlay.path())
            seed = build_cidata_iso(request.user_data, nocloud_meta_data(name))
            with _libvirt_reason(f"uploading volume {volumes.cidata_volume_name(name)}"):
                cidata = volumes.create_filled_volume(
                    self._conn, pool, volumes.cidata_volume_name(name), seed, self._upload
                )
                made.append(cidata.path())
            scratch = ""
            if request.scratch_space_gib > 0:
                with _libvirt_reason(f"creating volume {scratch_volume_name(name)}"):
                    scratch = create_scratch_volume(pool, name, request.scratch_space_gib).path()
                    made.append(scratch)
            spec = self._domain_spec(request, overlay.path(), cidata.path(), boot)
            domain_xml = build_domain_xml(replace(spec, scratch_disk=scratch))
            with _libvirt_reason(f"defining domain {name}"):
                domain = self._conn.defineXML(domain_xml)
            with _libvirt_reason(f"starting domain {name}"):
                domain.create()
        except BaseException:
            problems = self._remove_parts(domain, made)
            if problems:
                _log.error("create of %s failed and left: %s", name, "; ".join(problems))
            raise
        _log.info("created domain %s for sandbox %s", name, request.sandbox_id)
        return domain

    def _direct_boot_paths(self, pool: libvirt.virStoragePool, base_name: str) -> tuple[str, str]:
        """Paths of the kernel and initrd volumes when this VM boots them directly, else empty.

        Only with the configured base volume: a pod naming another image boots that image's own
        kernel through the firmware, since a kernel must match the modules on its root disk.
        """
        config = self._config
        if not config.direct_boot or base_name != config.vol_name:
            return "", ""
        paths = []
        for name in (config.kernel_vol, config.initrd_vol):
            with _libvirt_reason(f"looking up volume {name!r} in pool {config.pool}"):
                paths.append(pool.storageVolLookupByName(name).path() if name else "")
        return paths[0], paths[1]

    def _domain_spec(
        self, request: CreateRequest, root_disk: str, cidata_disk: str, boot: tuple[str, str] = ("", "")
    ) -> DomainSpec:
        config = self._config
        kernel, initrd = boot
        network: Network = (
            UserNetwork(host_port=_free_loopback_port())
            if config.user_network
            else LibvirtNetwork(config.network)
        )
        return DomainSpec(
            name=request.name,
            vcpus=request.spec.vcpus or config.cpu,
            memory_mib=request.spec.memory_mib or config.memory_mib,
            root_disk=root_disk,
            cidata_disk=cidata_disk,
            network=network,
            firmware=config.firmware,
            nvram_template=config.firmware_vars,
            kernel=kernel,
            initrd=initrd,
            cmdline=config.kernel_cmdline if kernel else "",
            launch_security=self._security,
            cpuset=config.cpuset,
            tags={**request.tags, OWNER_TAG: self.owner, SANDBOX_TAG: request.sandbox_id},
            domain_type=config.domain_type,
        )

    async def _ready_instance(self, domain: libvirt.virDomain, request: CreateRequest) -> Instance:
        """The instance once it has an address: at once in user-mode, else from DHCP or the agent."""
        uuid, metadata = await asyncio.to_thread(self._identity, domain)
        if metadata.forwarded_port is not None:
            return Instance(
                uuid, request.name, (LOOPBACK,), request.sandbox_id, forwarder_port=metadata.forwarded_port
            )
        loop = asyncio.get_running_loop()
        timeout = self._config.ip_timeout_s
        deadline = loop.time() + timeout
        while True:
            ips, problem = await asyncio.to_thread(_domain_addresses, domain, (_LEASE, _AGENT))
            if ips:
                return Instance(uuid, request.name, ips, request.sandbox_id)
            remaining = deadline - loop.time()
            if remaining <= 0:
                detail = f" (last error: {problem})" if problem else ""
                raise ProviderError(f"domain {request.name} got no IP address within {timeout:g}s{detail}")
            await asyncio.sleep(min(self._poll_interval_s, remaining))

    def _identity(self, domain: libvirt.virDomain) -> tuple[str, InstanceMetadata]:
        with _libvirt_reason("reading the new domain"):
            uuid: str = domain.UUIDString()
            metadata = read_metadata(domain.XMLDesc(0))
        if metadata is None:  # only if someone redefined the domain meanwhile
            raise ProviderError(f"domain {uuid} lost its peerpods metadata")
        return uuid, metadata

    # -- delete ---------------------------------------------------------------------------------

    def _delete(self, instance_id: str) -> None:
        try:
            domain = self._conn.lookupByUUIDString(instance_id)
            domain_xml = domain.XMLDesc(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_INVALID_ARG):
                raise InstanceNotFound(f"libvirt domain {instance_id}: {_message(exc)}") from exc
            raise ProviderError(f"looking up domain {instance_id}: {_message(exc)}") from exc
        if read_metadata(domain_xml) is None:
            # Its disks would be deleted too: never do that to a VM we did not make.
            raise InvalidRequestError(f"domain {instance_id} was not created by peerpods; not deleting it")
        problems = self._remove_parts(domain, file_disk_paths(domain_xml))
        if problems:
            raise ProviderError(f"deleting domain {instance_id}: " + "; ".join(problems))
        _log.info("deleted domain %s", instance_id)

    def _remove_domain(self, domain: libvirt.virDomain) -> None:
        """Best-effort removal of a domain we made or adopted, after its create failed."""
        try:
            domain_xml = domain.XMLDesc(0)
        except libvirt.libvirtError as exc:
            _log.error("cannot read domain to remove it: %s", _message(exc))
            return
        if read_metadata(domain_xml) is None:
            return  # redefined by someone else meanwhile: not ours to remove
        paths = file_disk_paths(domain_xml)
        problems = self._remove_parts(domain, paths)
        if problems:
            _log.error("removing a failed domain left: %s", "; ".join(problems))

    def _remove_parts(self, domain: libvirt.virDomain | None, volume_paths: Sequence[str]) -> list[str]:
        """Stop and undefine `domain` (with its NVRAM) and delete the volumes; what went wrong."""
        problems: list[str] = []
        if domain is not None:
            try:
                if domain.isActive():
                    domain.destroy()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_NO_DOMAIN):
                    # Deleting the disks of a VM that still runs is worse than leaving it.
                    return [f"stopping the domain: {_message(exc)}"]
        for path in volume_paths:
            try:
                volumes.delete_volume_at(self._conn, path)
            except libvirt.libvirtError as exc:
                problems.append(f"deleting volume {path}: {_message(exc)}")
        if domain is not None:
            try:
                _undefine(domain)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    problems.append(f"undefining the domain: {_message(exc)}")
        return problems

    # -- list -----------------------------------------------------------------------------------

    def _list(self) -> list[Instance]:
        with _libvirt_reason("listing domains"):
            domains = self._conn.listAllDomains(0)
        instances: list[Instance] = []
        for domain in domains:
            try:
                domain_xml, active, uuid, name = (
                    domain.XMLDesc(0),
                    domain.isActive(),
                    domain.UUIDString(),
                    domain.name(),
                )
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue  # deleted while we were listing
                raise ProviderError(f"reading domain: {_message(exc)}") from exc
            metadata = read_metadata(domain_xml)
            if metadata is None or metadata.tags.get(OWNER_TAG) != self.owner:
                continue
            port = metadata.forwarded_port
            if port is not None:
                ips: tuple[IPAddress, ...] = (LOOPBACK,)
            else:  # DHCP leases only: asking every guest agent would make listing slow
                ips = _domain_addresses(domain, (_LEASE,))[0] if active else ()
            sandbox_id = metadata.tags.get(SANDBOX_TAG, "")
            instances.append(Instance(uuid, name, ips, sandbox_id, forwarder_port=port))
        return instances


def _undefine(domain: libvirt.virDomain) -> None:
    """Undefine with the NVRAM file; drivers that know no flags get a plain undefine."""
    try:
        domain.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
            raise
        domain.undefine()


def _missing_boot_volumes(pool: libvirt.virStoragePool, config: LibvirtConfig) -> list[str]:
    """Direct-boot volumes the settings name that are not in `pool`."""
    problems = []
    for setting, name in (
        ("LIBVIRT_KERNEL_VOL_NAME", config.kernel_vol),
        ("LIBVIRT_INITRD_VOL_NAME", config.initrd_vol),
    ):
        try:
            if name:
                pool.storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            problems.append(f"{setting}: volume {name!r} in pool {config.pool!r}: {_message(exc)}")
    return problems


def check_host(conn: libvirt.virConnect, config: LibvirtConfig) -> LibvirtConfig:
    """`config` checked against the host (pool, network, architecture), launch security resolved."""
    problems: list[str] = []
    try:
        problems += _missing_boot_volumes(conn.storagePoolLookupByName(config.pool), config)
    except libvirt.libvirtError as exc:
        problems.append(f"LIBVIRT_POOL: storage pool {config.pool!r} at {config.uri}: {_message(exc)}")
    if not config.user_network:
        try:
            conn.networkLookupByName(config.network)
        except libvirt.libvirtError as exc:
            problems.append(f"LIBVIRT_NET: network {config.network!r} at {config.uri}: {_message(exc)}")
    security = config.launch_security
    try:
        with _libvirt_reason("reading the host's architecture"):
            host_arch = str(conn.getInfo()[0])
        security = resolve_launch_security(config, host_arch)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return replace(config, launch_security=security)


class LibvirtPlugin:
    """Entry point for `cloud-api-adaptor libvirt`."""

    name = "libvirt"
    settings: Sequence[Setting] = SETTINGS

    def create(self, config: Mapping[str, SettingValue | None], owner: str) -> LibvirtProvider:
        """Connects to libvirt (blocking, at start-up) and checks the host before any pod comes."""
        parsed = parse_config(config)
        try:
            conn = libvirt.open(parsed.uri)
        except libvirt.libvirtError as exc:
            raise ProviderError(f"cannot connect to libvirt at {parsed.uri}: {_message(exc)}") from exc
        try:
            return LibvirtProvider(conn, check_host(conn, parsed), owner)
        except BaseException:
            conn.close()
            raise


PLUGIN = LibvirtPlugin()
