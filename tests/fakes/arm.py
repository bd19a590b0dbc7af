"""A local fake of the Azure Resource Manager REST API, enough for the real azure-mgmt-compute/-network SDKs.

There is no Azure emulator that runs offline, so tests point the real SDK clients (`base_url=`) at this
server on 127.0.0.1. It keeps virtual machines, network interfaces, public IP addresses and managed
disks in memory and behaves like ARM where the provider depends on it:

- PUT of a VM is validated synchronously (size, image, NICs, confidential-VM rules, user data), answers
  201 with an `Azure-AsyncOperation` header, and finishes after `latency_s`; the OS disk is created by
  the VM PUT under the name the request gives it.
- DELETE answers 202 with an `Azure-AsyncOperation` header (204 when there is nothing to delete) and,
  for a VM, cascades to the OS disk, NICs and public IPs whose `deleteOption` is `Delete`.
- Resources in use cannot be deleted (NicInUse, PublicIPAddressInUse, attached disk), so the order in
  which a client cleans up matters as it does on Azure.
- Errors have ARM's shape `{"error": {"code", "message"}}`.

Fault injection: `inject()` answers matching requests with any status/code (429 + Retry-After, 500...),
`inject_capacity()` makes VM PUTs of a size fail with a capacity code (synchronously as 409, or as a
long-running operation that ends Failed). Every request is recorded (`requests`) with its JSON body.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

JSON = dict[str, Any]

MAX_USER_DATA_CHARS = 64 * 1024
CONFIDENTIAL_ENCRYPTION_TYPES = {"VMGuestStateOnly", "DiskWithVMGuestState", "NonPersistedTPM"}


@dataclass(frozen=True)
class VmSize:
    """One entry of the `vmSizes` list; `confidential` sizes accept `securityType: ConfidentialVM`."""

    name: str
    cores: int
    memory_mb: int
    confidential: bool = False

    def wire(self) -> JSON:
        return {
            "name": self.name,
            "numberOfCores": self.cores,
            "memoryInMB": self.memory_mb,
            "maxDataDiskCount": 4 * self.cores,
            "osDiskSizeInMB": 1047552,
            "resourceDiskSizeInMB": 0,
        }


DEFAULT_SIZES: tuple[VmSize, ...] = (
    # AMD SEV-SNP confidential sizes
    VmSize("Standard_DC2as_v5", 2, 8192, confidential=True),
    VmSize("Standard_DC4as_v5", 4, 16384, confidential=True),
    VmSize("Standard_DC8as_v5", 8, 32768, confidential=True),
    VmSize("Standard_EC4as_v5", 4, 32768, confidential=True),
    # Intel TDX confidential sizes
    VmSize("Standard_DC2es_v5", 2, 8192, confidential=True),
    VmSize("Standard_DC4es_v5", 4, 16384, confidential=True),
    # ordinary sizes
    VmSize("Standard_D2as_v5", 2, 8192),
    VmSize("Standard_B2s", 2, 4096),
)


@dataclass
class Fault:
    """Answer the next `remaining` requests matching `method` and `path_contains` with an ARM error."""

    method: str | None
    path_contains: str
    status: int
    code: str
    message: str
    retry_after: float | None = None
    remaining: int | None = 1  # None: forever

    def matches(self, method: str, path: str) -> bool:
        if self.remaining == 0:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        return self.path_contains.lower() in path.lower()


@dataclass
class CapacityFault:
    """VM PUTs of `size` fail for lack of capacity: synchronously (409) or as a Failed operation."""

    size: str
    code: str
    message: str
    sync: bool
    remaining: int | None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int
    at: float  # time.monotonic() when the request arrived


class ArmError(Exception):
    """Raised inside a handler to answer with ARM's error shape."""

    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after


@dataclass
class _Operation:
    id: str
    ready_at: float
    on_success: Callable[[], None]
    error: JSON | None = None  # the operation ends Failed with this error
    on_failure: Callable[[], None] | None = None
    status: str = "InProgress"
    started: float = field(default_factory=time.time)


@dataclass(frozen=True)
class _Reply:
    status: int
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()


_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"(?P<ns>Microsoft\.[A-Za-z]+)/(?P<type>[A-Za-z]+)/(?P<name>[^/]+)(?P<rest>(/[^/]+/[^/]+)*)$",
    re.IGNORECASE,
)
_COLLECTION = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"(?P<ns>Microsoft\.[A-Za-z]+)/(?P<type>[A-Za-z]+)$",
    re.IGNORECASE,
)
_LOCATION_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/providers/(?P<ns>Microsoft\.[A-Za-z]+)/locations/(?P<loc>[^/]+)/"
    r"(?P<what>vmSizes|operations/(?P<op>[^/]+))$",
    re.IGNORECASE,
)
_COMMUNITY_IMAGE = re.compile(r"^/CommunityGalleries/[^/]+/Images/[^/]+(/Versions/[^/]+)?$", re.IGNORECASE)

_TYPES = {
    "microsoft.compute/virtualmachines": "Microsoft.Compute/virtualMachines",
    "microsoft.compute/disks": "Microsoft.Compute/disks",
    "microsoft.network/networkinterfaces": "Microsoft.Network/networkInterfaces",
    "microsoft.network/publicipaddresses": "Microsoft.Network/publicIPAddresses",
}


def _key(resource_id: str) -> str:
    return resource_id.rstrip("/").lower()


def _dig(obj: Any, *path: str) -> Any:
    for step in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(step)
    return obj


def _norm_location(location: str) -> str:
    return location.replace(" ", "").lower()


class FakeArm:
    """The fake ARM server. Use as a context manager, or `start()`/`stop()`.

    State is inspectable with `resources(type)`/`resource(id)`; everything is keyed by ARM id, compared
    case-insensitively as ARM does.
    """

    def __init__(
        self,
        *,
        subscription_id: str = "00000000-0000-0000-0000-000000000001",
        location: str = "eastus",
        resource_group: str = "peerpods-rg",
        sizes: Iterable[VmSize] = DEFAULT_SIZES,
        latency_s: float = 0.0,
        network_latency_s: float = 0.0,
        page_size: int = 50,
        require_auth: bool = True,
    ) -> None:
        self.subscription_id = subscription_id
        self.location = location
        self.resource_group = resource_group
        self.sizes = {size.name.lower(): size for size in sizes}
        self.latency_s = latency_s
        self.network_latency_s = network_latency_s
        self.page_size = page_size
        self.require_auth = require_auth
        self._lock = threading.RLock()
        self._resource_groups = {resource_group.lower()}
        self._resources: dict[str, JSON] = {}
        self._operations: dict[str, _Operation] = {}
        self._vnets: dict[str, ipaddress.IPv4Network] = {}  # vnet id key -> address space
        self._subnets: dict[str, Iterator[ipaddress.IPv4Address]] = {}  # subnet id key -> free addresses
        self._nsgs: set[str] = set()
        self._images: set[str] = set()
        self._faults: list[Fault] = []
        self._capacity: list[CapacityFault] = []
        self._requests: list[RecordedRequest] = []
        self._public_ips = (ipaddress.IPv4Address("20.0.0.0") + i for i in itertools.count(10))
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> str:
        handler = type("_Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-arm", daemon=True
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> FakeArm:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("fake ARM server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- setup ----------------------------------------------------------------------------------------

    def rg_id(self, resource_group: str | None = None) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{resource_group or self.resource_group}"

    def add_resource_group(self, name: str) -> None:
        with self._lock:
            self._resource_groups.add(name.lower())

    def add_subnet(
        self, vnet: str = "vnet", subnet: str = "default", *, resource_group: str | None = None
    ) -> str:
        """Create a subnet (and its VNet); returns the subnet id. NICs get addresses from 10.k.0.0/16."""
        vnet_id = f"{self.rg_id(resource_group)}/providers/Microsoft.Network/virtualNetworks/{vnet}"
        subnet_id = f"{vnet_id}/subnets/{subnet}"
        with self._lock:
            space = self._vnets.setdefault(
                _key(vnet_id), ipaddress.IPv4Network(f"10.{len(self._vnets)}.0.0/16")
            )
            block = list(space.subnets(new_prefix=24))[len(self._subnets) % 256]
            # Azure reserves the first four addresses of every subnet
            self._subnets.setdefault(_key(subnet_id), itertools.islice(block.hosts(), 3, None))
        return subnet_id

    def add_nsg(self, name: str = "nsg", *, resource_group: str | None = None) -> str:
        nsg_id = f"{self.rg_id(resource_group)}/providers/Microsoft.Network/networkSecurityGroups/{name}"
        with self._lock:
            self._nsgs.add(_key(nsg_id))
        return nsg_id

    def add_image(self, image_id: str | None = None) -> str:
        """Register an image id (managed image, gallery version or /CommunityGalleries/ path)."""
        image_id = image_id or (
            f"{self.rg_id()}/providers/Microsoft.Compute/galleries/g/images/podvm/versions/0.0.1"
        )
        with self._lock:
            self._images.add(_key(image_id))
        return image_id

    # -- fault injection ------------------------------------------------------------------------------

    def inject(
        self,
        status: int,
        code: str,
        message: str = "injected fault",
        *,
        method: str | None = None,
        path_contains: str = "",
        retry_after: float | None = None,
        times: int | None = 1,
    ) -> Fault:
        """Answer the next `times` matching requests with this error (None: until `clear_faults`)."""
        fault = Fault(method, path_contains, status, code, message, retry_after, times)
        with self._lock:
            self._faults.append(fault)
        return fault

    def inject_capacity(
        self,
        size: str,
        code: str = "AllocationFailed",
        message: str | None = None,
        *,
        sync: bool = False,
        times: int | None = None,
    ) -> None:
        """VM PUTs for `size` fail: sync -> 409 with `code`; else the operation ends Failed with it."""
        message = message or (
            f"Allocation failed. We do not have sufficient capacity for the requested VM size {size} "
            "in this region."
        )
        with self._lock:
            self._capacity.append(CapacityFault(size.lower(), code, message, sync, times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._capacity.clear()

    # -- inspection -----------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_matching(self, method: str | None = None, path_contains: str = "") -> list[RecordedRequest]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper()) and path_contains.lower() in r.path.lower()
        ]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def resources(self, resource_type: str) -> list[JSON]:
        """Copies of the resources of one type, e.g. "virtualMachines", "disks", "networkInterfaces"."""
        suffix = "/" + resource_type.lower() + "/"
        with self._lock:
            self._advance()
            return [copy.deepcopy(r) for k, r in self._resources.items() if suffix in k]

    def resource(self, resource_id: str) -> JSON | None:
        with self._lock:
            self._advance()
            found = self._resources.get(_key(resource_id))
            return copy.deepcopy(found) if found is not None else None

    def set_properties(self, resource_id: str, **properties: Any) -> None:
        """Change a resource's properties behind the API's back, as an older client or an operator may
        have left them (e.g. a public IP's `deleteOption`)."""
        with self._lock:
            self._resources[_key(resource_id)]["properties"].update(properties)

    def all_resources(self) -> list[JSON]:
        with self._lock:
            self._advance()
            return [copy.deepcopy(r) for r in self._resources.values()]

    def pending_operations(self) -> int:
        with self._lock:
            self._advance()
            return sum(1 for op in self._operations.values() if op.status == "InProgress")

    # -- request handling (called by the HTTP handler) ------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], raw_body: bytes) -> _Reply:
        split = urlsplit(raw_path)
        path = unquote(split.path).rstrip("/")
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        body: Any = None
        reply: _Reply
        with self._lock:
            arrived = time.monotonic()
            try:
                if raw_body:
                    try:
                        body = json.loads(raw_body)
                    except ValueError as exc:
                        raise ArmError(
                            400, "InvalidRequestContent", f"The request content is not JSON: {exc}"
                        ) from None
                self._check_fault(method, path)
                if self.require_auth and not headers.get("authorization", "").startswith("Bearer "):
                    raise ArmError(
                        401, "AuthenticationFailed", "Authentication failed. The bearer token is missing."
                    )
                if "api-version" not in query:
                    raise ArmError(
                        400, "MissingApiVersionParameter", "The api-version query parameter is required."
                    )
                self._advance()
                reply = self._route(method, path, query, body, headers.get("host", ""))
            except ArmError as err:
                extra = () if err.retry_after is None else (("Retry-After", _fmt_seconds(err.retry_after)),)
                reply = _Reply(err.status, {"error": {"code": err.code, "message": err.message}}, extra)
            safe_headers = {k: ("<redacted>" if k == "authorization" else v) for k, v in headers.items()}
            self._requests.append(
                RecordedRequest(method, path, query, safe_headers, body, reply.status, arrived)
            )
        return reply

    def _check_fault(self, method: str, path: str) -> None:
        for fault in self._faults:
            if fault.matches(method, path):
                if fault.remaining is not None:
                    fault.remaining -= 1
                raise ArmError(fault.status, fault.code, fault.message, fault.retry_after)

    def _route(self, method: str, path: str, query: dict[str, str], body: Any, host: str) -> _Reply:
        self._host = host
        if m := _LOCATION_PATH.match(path):
            self._check_subscription(m["sub"])
            if method != "GET":
                raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed here.")
            if m["op"]:
                return self._operation_status(m["op"])
            return self._vm_sizes(m["loc"])
        if m := _COLLECTION.match(path):
            self._check_scope(m["sub"], m["rg"])
            rtype = _TYPES.get(f"{m['ns']}/{m['type']}".lower())
            if rtype is None or method != "GET":
                raise ArmError(
                    404, "InvalidResourceType", f"The resource type '{m['type']}' could not be found."
                )
            return self._list(path, rtype, query)
        if (m := _ID.match(path)) and not m["rest"]:
            self._check_scope(m["sub"], m["rg"])
            rtype = _TYPES.get(f"{m['ns']}/{m['type']}".lower())
            if rtype is None:
                raise ArmError(
                    404, "InvalidResourceType", f"The resource type '{m['type']}' could not be found."
                )
            return self._resource_call(method, path, rtype, m["rg"], m["name"], body, query)
        raise ArmError(404, "InvalidResourceType", f"No route for {path}")

    def _check_subscription(self, sub: str) -> None:
        if sub.lower() != self.subscription_id.lower():
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")

    def _check_scope(self, sub: str, rg: str) -> None:
        self._check_subscription(sub)
        if rg.lower() not in self._resource_groups:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")

    def _resource_call(
        self, method: str, path: str, rtype: str, rg: str, name: str, body: Any, query: dict[str, str]
    ) -> _Reply:
        handlers: dict[tuple[str, str], Callable[..., _Reply]] = {
            ("PUT", "Microsoft.Compute/virtualMachines"): self._put_vm,
            ("PUT", "Microsoft.Network/networkInterfaces"): self._put_nic,
            ("PUT", "Microsoft.Network/publicIPAddresses"): self._put_public_ip,
        }
        if method == "GET":
            found = self._resources.get(_key(path))
            if found is None:
                raise ArmError(
                    404,
                    "ResourceNotFound",
                    f"The Resource '{rtype}/{name}' under resource group '{rg}' was not found.",
                )
            return _Reply(200, self._visible(found, query))
        if method == "DELETE":
            return self._delete(path, rtype)
        if method == "PUT":
            if not isinstance(body, dict):
                raise ArmError(400, "InvalidRequestContent", "The request content must be a JSON object.")
            handler = handlers.get((method, rtype))
            if handler is None:
                raise ArmError(405, "MethodNotAllowed", f"PUT of {rtype} is not supported by the fake.")
            return handler(path, rg, name, body)
        raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on {rtype}.")

    @staticmethod
    def _visible(resource: JSON, query: dict[str, str]) -> JSON:
        shown = copy.deepcopy(resource)
        if "userdata" not in query.get("$expand", "").lower():
            shown.get("properties", {}).pop("userData", None)
        return shown

    def _list(self, path: str, rtype: str, query: dict[str, str]) -> _Reply:
        prefix = _key(path) + "/"
        items = [r for k, r in self._resources.items() if k.startswith(prefix) and r["type"] == rtype]
        start = int(query.get("$skiptoken", "0"))
        page = items[start : start + self.page_size]
        reply: JSON = {"value": [self._visible(r, {}) for r in page]}
        if start + self.page_size < len(items):
            api = query["api-version"]
            reply["nextLink"] = (
                f"http://{self._host}{path}?api-version={api}&$skiptoken={start + self.page_size}"
            )
        return _Reply(200, reply)

    def _vm_sizes(self, location: str) -> _Reply:
        if _norm_location(location) != _norm_location(self.location):
            return _Reply(200, {"value": []})
        return _Reply(200, {"value": [size.wire() for size in self.sizes.values()]})

    # -- long-running operations ----------------------------------------------------------------------

    def _start_operation(
        self,
        latency_s: float,
        on_success: Callable[[], None],
        error: JSON | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> tuple[str, str]:
        op = _Operation(uuid.uuid4().hex, time.monotonic() + latency_s, on_success, error, on_failure)
        self._operations[op.id] = op
        url = (
            f"http://{self._host}/subscriptions/{self.subscription_id}/providers/Microsoft.Compute/"
            f"locations/{self.location}/operations/{op.id}?api-version=2024-07-01"
        )
        return ("Azure-AsyncOperation", url)

    def _advance(self) -> None:
        """Finish the operations whose latency has passed (lazily, so no timer threads are needed)."""
        now = time.monotonic()
        for op in self._operations.values():
            if op.status == "InProgress" and op.ready_at <= now:
                if op.error is None:
                    op.on_success()
                    op.status = "Succeeded"
                else:
                    if op.on_failure is not None:
                        op.on_failure()
                    op.status = "Failed"

    def _operation_status(self, op_id: str) -> _Reply:
        op = self._operations.get(op_id)
        if op is None:
            raise ArmError(404, "ResourceNotFound", f"Operation {op_id} was not found.")
        status: JSON = {"name": op.id, "status": op.status, "startTime": _iso(op.started)}
        if op.status != "InProgress":
            status["endTime"] = _iso(time.time())
        if op.status == "Failed":
            status["error"] = op.error
        return _Reply(200, status)

    # -- virtual machines -----------------------------------------------------------------------------

    def _put_vm(self, path: str, rg: str, name: str, body: JSON) -> _Reply:
        vm_id = self._canonical_id(rg, "Microsoft.Compute/virtualMachines", name)
        existing = self._resources.get(_key(vm_id))
        if existing is not None and _dig(existing, "properties", "provisioningState") in {
            "Creating",
            "Updating",
            "Deleting",
        }:
            raise ArmError(
                409,
                "OperationNotAllowed",
                f"Operation 'PUT' is not allowed on VM '{name}' since the VM is "
                f"{existing['properties']['provisioningState'].lower()}.",
            )
        props = body.get("properties")
        if not isinstance(props, dict):
            raise ArmError(400, "InvalidParameter", "The 'properties' of the virtual machine are required.")
        if not body.get("location"):
            raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
        if _norm_location(body["location"]) != _norm_location(self.location):
            raise ArmError(400, "InvalidParameter", f"Location '{body['location']}' is not available.")
        size = self._validate_size(props)
        self._validate_image(props)
        self._validate_os_profile(props)
        self._validate_user_data(props)
        self._validate_security(props, size)
        nic_ids = self._validate_nics(props, vm_id)
        capacity = self._capacity_fault(size)
        if capacity is not None and capacity.sync:
            raise ArmError(409, capacity.code, capacity.message)
        disk_id = self._attach_os_disk(vm_id, rg, name, props, existing)
        data_disk_ids = self._create_data_disks(vm_id, rg, props)

        vm: JSON = {
            "id": vm_id,
            "name": name,
            "type": "Microsoft.Compute/virtualMachines",
            "location": self.location,
            "tags": dict(body.get("tags") or {}),
            "properties": copy.deepcopy(props),
        }
        vm_props = vm["properties"]
        vm_props["vmId"] = existing["properties"]["vmId"] if existing else str(uuid.uuid4())
        vm_props["provisioningState"] = "Updating" if existing else "Creating"
        vm_props["timeCreated"] = existing["properties"]["timeCreated"] if existing else _iso(time.time())
        vm_props["storageProfile"]["osDisk"].setdefault("managedDisk", {})["id"] = disk_id
        data_disks = vm_props["storageProfile"].get("dataDisks", [])
        for data_disk, data_disk_id in zip(data_disks, data_disk_ids, strict=True):
            data_disk.setdefault("managedDisk", {})["id"] = data_disk_id
        self._resources[_key(vm_id)] = vm
        for nic_id in nic_ids:
            self._resources[_key(nic_id)]["properties"]["virtualMachine"] = {"id": vm_id}
        disk = self._resources[_key(disk_id)]

        def succeed() -> None:
            vm_props["provisioningState"] = "Succeeded"
            disk["properties"]["provisioningState"] = "Succeeded"

        def fail() -> None:
            vm_props["provisioningState"] = "Failed"
            disk["properties"]["provisioningState"] = "Succeeded"

        error = None if capacity is None else {"code": capacity.code, "message": capacity.message}
        header = self._start_operation(self.latency_s, succeed, error, fail)
        return _Reply(200 if existing else 201, self._visible(vm, {}), (header,))

    def _validate_size(self, props: JSON) -> VmSize:
        size_name = _dig(props, "hardwareProfile", "vmSize")
        size = self.sizes.get(str(size_name).lower()) if size_name else None
        if size is None:
            raise ArmError(
                400,
                "InvalidParameter",
                f"The value {size_name} provided for the VM size is not valid. Use the vmSizes list for "
                f"location {self.location} to find the available sizes.",
            )
        return size

    def _validate_image(self, props: JSON) -> None:
        ref = _dig(props, "storageProfile", "imageReference")
        if not isinstance(ref, dict):
            raise ArmError(400, "InvalidParameter", "Required parameter 'imageReference' is missing (null).")
        community = ref.get("communityGalleryImageId")
        image_id = ref.get("id")
        if community:
            if not _COMMUNITY_IMAGE.match(community):
                raise ArmError(
                    400, "InvalidParameter", f"The community gallery image id '{community}' is invalid."
                )
            if _key(community) not in self._images:
                raise ArmError(
                    404,
                    "GalleryImageNotFound",
                    f"The specified gallery image '{community}' could not be found.",
                )
            return
        if not image_id:
            raise ArmError(400, "InvalidParameter", "The value of parameter imageReference.id is invalid.")
        if not _ID.match(image_id):
            raise ArmError(
                400,
                "InvalidParameter",
                f"The value '{image_id}' of parameter 'imageReference.id' is invalid.",
            )
        if _key(image_id) not in self._images:
            raise ArmError(404, "ImageNotFound", f"The platform image '{image_id}' is not available.")

    @staticmethod
    def _validate_os_profile(props: JSON) -> None:
        profile = props.get("osProfile")
        if not isinstance(profile, dict) or not profile.get("adminUsername"):
            raise ArmError(400, "InvalidParameter", "Required parameter 'adminUsername' is missing (null).")
        linux = profile.get("linuxConfiguration") or {}
        keys = _dig(linux, "ssh", "publicKeys") or []
        if linux.get("disablePasswordAuthentication") and not keys:
            raise ArmError(
                400,
                "InvalidParameter",
                "Password authentication is disabled but no SSH public key was given.",
            )
        for key in keys:
            if not str(key.get("keyData", "")).startswith(("ssh-rsa ", "ssh-ed25519 ")):
                raise ArmError(400, "InvalidParameter", "The SSH public key data is not a valid OpenSSH key.")

    @staticmethod
    def _validate_user_data(props: JSON) -> None:
        user_data = props.get("userData")
        if user_data is None:
            return
        if len(user_data) > MAX_USER_DATA_CHARS:
            raise ArmError(400, "InvalidParameter", "The userData must not be larger than 64 KB.")
        try:
            base64.b64decode(user_data, validate=True)
        except (binascii.Error, ValueError):
            raise ArmError(400, "InvalidParameter", "The userData is not base64-encoded.") from None

    @staticmethod
    def _validate_security(props: JSON, size: VmSize) -> None:
        security = props.get("securityProfile") or {}
        encryption = _dig(
            props, "storageProfile", "osDisk", "managedDisk", "securityProfile", "securityEncryptionType"
        )
        if security.get("securityType") != "ConfidentialVM":
            if encryption:
                raise ArmError(
                    400,
                    "InvalidParameter",
                    "securityEncryptionType can only be set when securityType is ConfidentialVM.",
                )
            return
        if not size.confidential:
            raise ArmError(
                400,
                "InvalidParameter",
                f"The VM size '{size.name}' is not supported for the security type 'ConfidentialVM'.",
            )
        if not _dig(security, "uefiSettings", "vTpmEnabled"):
            raise ArmError(400, "InvalidParameter", "vTpmEnabled must be true for a ConfidentialVM.")
        if encryption not in CONFIDENTIAL_ENCRYPTION_TYPES:
            raise ArmError(
                400,
                "InvalidParameter",
                "osDisk.managedDisk.securityProfile.securityEncryptionType is required for a ConfidentialVM.",
            )

    def _validate_nics(self, props: JSON, vm_id: str) -> list[str]:
        refs = _dig(props, "networkProfile", "networkInterfaces")
        if not refs:
            raise ArmError(400, "InvalidParameter", "At least one network interface is required.")
        nic_ids = []
        for ref in refs:
            nic_id = str(ref.get("id", ""))
            nic = self._resources.get(_key(nic_id))
            if nic is None:
                raise ArmError(400, "InvalidParameter", f"Network interface '{nic_id}' was not found.")
            owner = _dig(nic, "properties", "virtualMachine", "id")
            if owner and _key(owner) != _key(vm_id):
                raise ArmError(
                    400,
                    "NicInUse",
                    f"Network interface '{nic_id}' is already used by virtual machine '{owner}'.",
                )
            nic_ids.append(nic["id"])
        return nic_ids

    def _capacity_fault(self, size: VmSize) -> CapacityFault | None:
        for fault in self._capacity:
            if fault.size == size.name.lower() and fault.remaining != 0:
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
        return None

    def _create_data_disks(self, vm_id: str, rg: str, props: JSON) -> list[str]:
        """`createOption: Empty` data disks become managed disks of the VM; their ids."""
        ids: list[str] = []
        for data_disk in _dig(props, "storageProfile", "dataDisks") or []:
            if data_disk.get("createOption") != "Empty" or not data_disk.get("diskSizeGB"):
                raise ArmError(400, "InvalidParameter", "dataDisks: only Empty disks with a diskSizeGB here.")
            disk_id = self._canonical_id(rg, "Microsoft.Compute/disks", data_disk["name"])
            self._resources.setdefault(
                _key(disk_id),
                {
                    "id": disk_id,
                    "name": data_disk["name"],
                    "type": "Microsoft.Compute/disks",
                    "location": self.location,
                    "managedBy": vm_id,
                    "properties": {"diskSizeGB": data_disk["diskSizeGB"], "diskState": "Attached"},
                },
            )
            ids.append(disk_id)
        return ids

    def _attach_os_disk(self, vm_id: str, rg: str, vm_name: str, props: JSON, existing: JSON | None) -> str:
        os_disk = _dig(props, "storageProfile", "osDisk")
        if not isinstance(os_disk, dict) or os_disk.get("createOption") != "FromImage":
            raise ArmError(400, "InvalidParameter", "osDisk.createOption must be FromImage.")
        disk_name = os_disk.get("name") or f"{vm_name}_OsDisk_1_{uuid.uuid4().hex}"
        disk_id = self._canonical_id(rg, "Microsoft.Compute/disks", disk_name)
        found = self._resources.get(_key(disk_id))
        if found is not None:
            if _key(found.get("managedBy", "")) != _key(vm_id) or existing is None:
                raise ArmError(
                    409,
                    "ConflictingUserInput",
                    f"Disk {disk_name} already exists in resource group {rg.upper()}. "
                    "Only CreateOption.Attach is supported.",
                )
            return disk_id
        managed = os_disk.get("managedDisk") or {}
        disk_props: JSON = {
            "osType": "Linux",
            "diskSizeGB": os_disk.get("diskSizeGB") or 30,
            "diskState": "Attached",
            "provisioningState": "Creating",
            "creationData": {"createOption": "FromImage"},
        }
        encryption = _dig(managed, "securityProfile", "securityEncryptionType")
        if encryption:
            disk_props["securityProfile"] = {
                "securityType": f"ConfidentialVM_{encryption}EncryptedWithPlatformKey"
            }
        self._resources[_key(disk_id)] = {
            "id": disk_id,
            "name": disk_name,
            "type": "Microsoft.Compute/disks",
            "location": self.location,
            "managedBy": vm_id,
            "sku": {"name": managed.get("storageAccountType", "Premium_LRS")},
            "properties": disk_props,
        }
        return disk_id

    # -- network --------------------------------------------------------------------------------------

    def _put_nic(self, path: str, rg: str, name: str, body: JSON) -> _Reply:
        nic_id = self._canonical_id(rg, "Microsoft.Network/networkInterfaces", name)
        existing = self._resources.get(_key(nic_id))
        configs = _dig(body, "properties", "ipConfigurations")
        if not configs:
            raise ArmError(400, "InvalidRequestFormat", "At least one IP configuration is required.")
        nsg_id = _dig(body, "properties", "networkSecurityGroup", "id")
        if nsg_id and _key(nsg_id) not in self._nsgs:
            raise ArmError(404, "NotFound", f"Resource {nsg_id} not found.")
        old_ips = {
            c.get("name"): _dig(c, "properties", "privateIPAddress")
            for c in (_dig(existing, "properties", "ipConfigurations") or [])
        }
        stored_configs = []
        public_ips = []
        for config in configs:
            config_props = config.get("properties") or {}
            subnet_id = str(_dig(config_props, "subnet", "id") or "")
            free = self._subnet(subnet_id, nic_id)
            pip_id = _dig(config_props, "publicIPAddress", "id")
            if pip_id:
                pip = self._resources.get(_key(pip_id))
                if pip is None:
                    raise ArmError(
                        400,
                        "InvalidResourceReference",
                        f"Resource {pip_id} referenced by resource {nic_id} was not found.",
                    )
                public_ips.append(pip)
            config_name = config.get("name") or "ipconfig1"
            address = old_ips.get(config_name) or str(next(free))
            stored = copy.deepcopy(config)
            stored["name"] = config_name
            stored["id"] = f"{nic_id}/ipConfigurations/{config_name}"
            stored.setdefault("properties", {}).update(
                {
                    "privateIPAddress": address,
                    "privateIPAddressVersion": "IPv4",
                    "provisioningState": "Succeeded",
                }
            )
            stored_configs.append(stored)
        for pip, config in zip(public_ips, stored_configs, strict=False):
            owner = _dig(pip, "properties", "ipConfiguration", "id")
            if owner and not _key(owner).startswith(_key(nic_id) + "/"):
                raise ArmError(
                    400, "PublicIPAddressInUse", f"Public IP address {pip['id']} is in use by {owner}."
                )
            pip["properties"]["ipConfiguration"] = {"id": config["id"]}
        nic = {
            "id": nic_id,
            "name": name,
            "type": "Microsoft.Network/networkInterfaces",
            "location": body.get("location", self.location),
            "tags": dict(body.get("tags") or {}),
            "properties": {
                **copy.deepcopy(body.get("properties") or {}),
                "ipConfigurations": stored_configs,
                "provisioningState": "Updating" if existing else "Creating",
                "macAddress": "00-0D-3A-" + "-".join(f"{b:02X}" for b in uuid.uuid4().bytes[:3]),
            },
        }
        if existing and _dig(existing, "properties", "virtualMachine"):
            nic["properties"]["virtualMachine"] = existing["properties"]["virtualMachine"]
        self._resources[_key(nic_id)] = nic
        header = self._start_operation(self.network_latency_s, lambda: _set_state(nic, "Succeeded"))
        return _Reply(200 if existing else 201, copy.deepcopy(nic), (header,))

    def _subnet(self, subnet_id: str, nic_id: str) -> Iterator[ipaddress.IPv4Address]:
        m = _ID.match(subnet_id)
        if not m or m["type"].lower() != "virtualnetworks" or not m["rest"].lower().startswith("/subnets/"):
            raise ArmError(
                400,
                "LinkedInvalidPropertyId",
                f"Property id '{subnet_id}' at path 'properties.ipConfigurations[0].properties.subnet.id' "
                "is invalid. Expect fully qualified resource Id that start with "
                "'/subscriptions/{subscriptionId}'.",
            )
        vnet_id = subnet_id[: -len(m["rest"])]
        if _key(vnet_id) not in self._vnets:
            raise ArmError(404, "NotFound", f"Resource {vnet_id} not found.")
        free = self._subnets.get(_key(subnet_id))
        if free is None:
            raise ArmError(
                400,
                "InvalidResourceReference",
                f"Resource {subnet_id} referenced by resource {nic_id} was not found. Please make sure "
                "that the referenced resource exists, and that both resources are in the same region.",
            )
        return free

    def _put_public_ip(self, path: str, rg: str, name: str, body: JSON) -> _Reply:
        pip_id = self._canonical_id(rg, "Microsoft.Network/publicIPAddresses", name)
        existing = self._resources.get(_key(pip_id))
        address = _dig(existing, "properties", "ipAddress") or str(next(self._public_ips))
        props = copy.deepcopy(body.get("properties") or {})
        props.update({"ipAddress": address, "provisioningState": "Updating" if existing else "Creating"})
        if existing and _dig(existing, "properties", "ipConfiguration"):
            props["ipConfiguration"] = existing["properties"]["ipConfiguration"]
        pip = {
            "id": pip_id,
            "name": name,
            "type": "Microsoft.Network/publicIPAddresses",
            "location": body.get("location", self.location),
            "sku": body.get("sku") or {"name": "Standard"},
            "tags": dict(body.get("tags") or {}),
            "properties": props,
        }
        self._resources[_key(pip_id)] = pip
        header = self._start_operation(self.network_latency_s, lambda: _set_state(pip, "Succeeded"))
        return _Reply(200 if existing else 201, copy.deepcopy(pip), (header,))

    # -- deletion -------------------------------------------------------------------------------------

    def _delete(self, path: str, rtype: str) -> _Reply:
        resource = self._resources.get(_key(path))
        if resource is None:
            return _Reply(204)
        if rtype == "Microsoft.Compute/virtualMachines":
            # A second DELETE while one runs joins it (the removal is idempotent).
            _set_state(resource, "Deleting")
            header = self._start_operation(self.latency_s, lambda: self._remove_vm(resource))
            return _Reply(202, None, (header,))
        if rtype == "Microsoft.Network/networkInterfaces":
            owner = _dig(resource, "properties", "virtualMachine", "id")
            if owner:
                raise ArmError(
                    400,
                    "NicInUse",
                    f"Network Interface {resource['id']} is used by existing resource {owner}. In order to "
                    "delete the network interface, it must be dissociated from the resource.",
                )
        elif rtype == "Microsoft.Network/publicIPAddresses":
            owner = _dig(resource, "properties", "ipConfiguration", "id")
            if owner:
                raise ArmError(
                    400,
                    "PublicIPAddressInUse",
                    f"Public IP address {resource['id']} can not be deleted since it is still allocated to "
                    f"resource {owner}.",
                )
        elif rtype == "Microsoft.Compute/disks" and resource.get("managedBy"):
            raise ArmError(
                409,
                "OperationNotAllowed",
                f"Disk {resource['name']} is attached to VM {resource['managedBy']}.",
            )
        _set_state(resource, "Deleting")
        latency = self.latency_s if rtype == "Microsoft.Compute/disks" else self.network_latency_s
        header = self._start_operation(latency, lambda: self._remove(resource["id"]))
        return _Reply(202, None, (header,))

    def _remove(self, resource_id: str) -> None:
        resource = self._resources.pop(_key(resource_id), None)
        if resource is None or resource["type"] != "Microsoft.Network/networkInterfaces":
            return
        for config in resource["properties"]["ipConfigurations"]:
            pip = self._resources.get(_key(_dig(config, "properties", "publicIPAddress", "id") or ""))
            if pip is not None:
                pip["properties"].pop("ipConfiguration", None)

    def _remove_vm(self, vm: JSON) -> None:
        """Delete the VM, then what it owns according to each resource's deleteOption."""
        self._resources.pop(_key(vm["id"]), None)
        storage = _dig(vm, "properties", "storageProfile") or {}
        for vm_disk in [storage.get("osDisk") or {}, *(storage.get("dataDisks") or [])]:
            disk = self._resources.get(_key(_dig(vm_disk, "managedDisk", "id") or ""))
            if disk is None:
                continue
            if vm_disk.get("deleteOption") == "Delete":
                self._resources.pop(_key(disk["id"]), None)
            else:
                disk.pop("managedBy", None)
                disk["properties"]["diskState"] = "Unattached"
        for ref in _dig(vm, "properties", "networkProfile", "networkInterfaces") or []:
            nic = self._resources.get(_key(ref.get("id", "")))
            if nic is None:
                continue
            nic["properties"].pop("virtualMachine", None)
            if _dig(ref, "properties", "deleteOption") != "Delete":
                continue
            self._remove(nic["id"])
            for config in nic["properties"]["ipConfigurations"]:
                pip = self._resources.get(_key(_dig(config, "properties", "publicIPAddress", "id") or ""))
                if pip is not None and _dig(pip, "properties", "deleteOption") == "Delete":
                    self._resources.pop(_key(pip["id"]), None)

    def _canonical_id(self, rg: str, rtype: str, name: str) -> str:
        existing = self._resources.get(_key(f"{self.rg_id(rg)}/providers/{rtype}/{name}"))
        return str(existing["id"]) if existing else f"{self.rg_id(rg)}/providers/{rtype}/{name}"


def _set_state(resource: JSON, state: str) -> None:
    resource["properties"]["provisioningState"] = state


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00", time.gmtime(epoch))


def _fmt_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeArm
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else headers and body in two segments cost a 40 ms delayed ACK

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.fake.handle(self.command, self.path, headers, raw_body)
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        if payload:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_DELETE = do_PATCH = do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `FakeArm.requests` instead."""
