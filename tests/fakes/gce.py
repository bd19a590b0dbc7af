"""A local fake of the Compute Engine REST API (v1), enough for the real google-cloud-compute SDK.

There is no Google-provided Compute emulator, so tests drive the real SDK (REST transport) against
this server on 127.0.0.1:

    compute_v1.InstancesClient(credentials=AnonymousCredentials(),
                               client_options=ClientOptions(api_endpoint=fake.endpoint),
                               transport="rest")

Covered: instances insert/get/list (with `filter` on `labels.KEY = VALUE`, `name`, `status`, and
paging)/delete, zoneOperations get/wait, machineTypes get/list, images get. Inserts are validated
the way Compute Engine does it (machine type, image, disk size, network, subnetwork, labels,
metadata, confidential settings versus machine family and maintenance policy) and answered with
Google's error shape `{"error": {"code", "message", "errors": [{"message", "domain", "reason"}]}}`.
Error texts follow Compute Engine's where they are known; treat them as close approximations.

Faults: `fail()` queues HTTP errors for one API method (429 with Retry-After, 500, 503, ...);
`exhaust()` makes inserts of a machine type end in a ZONE_RESOURCE_POOL_EXHAUSTED operation error;
`op_latency_s` is how long an operation stays RUNNING. State is inspected with `instances()`,
`disks()`, `operations()` and `requests`.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import itertools
import json
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Json = dict[str, Any]

LINK_BASE = "https://www.googleapis.com/compute/v1/"
CONFIDENTIAL_TYPES = ("SEV", "SEV_SNP", "TDX")
# Which machine families Compute Engine accepts per confidential type (public documentation).
CVM_FAMILIES: dict[str, tuple[str, ...]] = {
    "SEV": ("n2d", "c2d", "c3d", "c4d"),
    "SEV_SNP": ("n2d",),
    "TDX": ("c3",),
}
DISK_TYPES = ("pd-standard", "pd-balanced", "pd-ssd", "pd-extreme", "hyperdisk-balanced")
DEFAULT_MACHINE_TYPES: dict[str, tuple[int, int]] = {
    # name: (guestCpus, memoryMb)
    "e2-medium": (2, 4096),
    "e2-standard-2": (2, 8192),
    "e2-standard-4": (4, 16384),
    "n2d-standard-2": (2, 8192),
    "n2d-standard-4": (4, 16384),
    "n2d-standard-8": (8, 32768),
    "c3-standard-4": (4, 16384),
    "c3-standard-8": (8, 32768),
}
_NAME_RE = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
_LABEL_KEY_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}")
_LABEL_VALUE_RE = re.compile(r"[a-z0-9_-]{0,63}")
_METADATA_KEY_RE = re.compile(r"[a-zA-Z0-9_-]{1,128}")
_METADATA_VALUE_MAX = 256 * 1024
_MAX_LABELS = 64

_DEFAULT_FAULT_TEXT: dict[int, tuple[str, str, str]] = {
    # status: (reason, domain, message)
    400: ("invalid", "global", "Invalid value for field 'resource'."),
    403: ("rateLimitExceeded", "usageLimits", "Rate Limit Exceeded"),
    404: ("notFound", "global", "The resource was not found"),
    429: ("rateLimitExceeded", "usageLimits", "Rate Limit Exceeded"),
    500: ("backendError", "global", "Internal error. Please try again or contact Google Support."),
    503: ("backendError", "global", "The service is currently unavailable."),
}


class ApiError(Exception):
    """An error answer in Compute Engine's JSON shape."""

    def __init__(
        self, status: int, reason: str, message: str, domain: str = "global", retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.domain = domain
        self.retry_after = retry_after

    def body(self) -> Json:
        return {
            "error": {
                "code": self.status,
                "message": self.message,
                "errors": [{"message": self.message, "domain": self.domain, "reason": self.reason}],
            }
        }


def _invalid(field_name: str, value: object, why: str) -> ApiError:
    return ApiError(400, "invalid", f"Invalid value for field '{field_name}': '{value}'. {why}")


def _not_found(resource: str) -> ApiError:
    return ApiError(404, "notFound", f"The resource '{resource}' was not found")


@dataclass
class RecordedRequest:
    """One request as the fake received it, and the status it answered."""

    api: str  # e.g. "instances.insert"
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival
    status: int = 0


@dataclass
class Fault:
    api: str  # an API method name as in RecordedRequest.api, or "*"
    error: ApiError
    remaining: int
    commit: bool  # do the work first, then answer with the error (a lost response)


@dataclass
class _Operation:
    resource: Json
    done_at: float
    on_done: Callable[[], Json | None] | None  # finishes the work; returns an operation error or None


@dataclass
class _Zone:
    name: str
    machine_types: dict[str, tuple[int, int]] = field(default_factory=dict)
    instances: dict[str, Json] = field(default_factory=dict)
    disks: dict[str, Json] = field(default_factory=dict)
    operations: dict[str, _Operation] = field(default_factory=dict)

    @property
    def region(self) -> str:
        return self.name.rsplit("-", 1)[0]


def _strip_link(value: str) -> str:
    """A full or partial resource URL as a path relative to compute/v1/ ('projects/p/...' or 'zones/...')."""
    path = urlsplit(value).path if "://" in value else value
    marker = "/compute/v1/"
    if marker in path:
        path = path.split(marker, 1)[1]
    return path.strip("/")


class FakeCompute:
    """The fake Compute Engine API server. Use as a context manager or call start()/stop()."""

    def __init__(
        self,
        project: str = "test-project",
        zones: tuple[str, ...] = ("us-central1-a",),
        *,
        op_latency_s: float = 0.0,
        wait_timeout_s: float = 30.0,
        page_size: int = 500,
        machine_types: dict[str, tuple[int, int]] | None = None,
    ) -> None:
        self.project = project
        self.op_latency_s = op_latency_s
        self.wait_timeout_s = wait_timeout_s
        self.page_size = page_size
        self.requests: list[RecordedRequest] = []
        self._zones = {z: _Zone(z, dict(machine_types or DEFAULT_MACHINE_TYPES)) for z in zones}
        self._images: dict[tuple[str, str], Json] = {}
        self._networks: dict[tuple[str, str], Json] = {}
        self._subnetworks: dict[tuple[str, str, str], Json] = {}
        self._subnet_hosts: dict[str, Iterator[ipaddress.IPv4Address]] = {}
        self._faults: list[Fault] = []
        self._gpus: dict[str, int] = {}
        self._exhausted: dict[str, int | None] = {}
        self._ids = itertools.count(1_000_000_001)
        self._nat_hosts = ipaddress.IPv4Network("34.118.0.0/16").hosts()
        self._cond = threading.Condition()
        self._stopping = False
        self._held = False
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.add_network("default")
        for zone in self._zones.values():
            self.add_subnetwork("default", zone.region, "10.128.0.0/20", network="default")

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeCompute:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-gce", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeCompute:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "fake not started"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # ------------------------------------------------------------------ seeding

    def add_image(self, name: str, disk_size_gb: int = 10, project: str | None = None) -> str:
        """Register an image; returns its partial path projects/<p>/global/images/<name>."""
        project = project or self.project
        path = f"projects/{project}/global/images/{name}"
        with self._cond:
            self._images[(project, name)] = {
                "kind": "compute#image",
                "id": str(next(self._ids)),
                "name": name,
                "diskSizeGb": str(disk_size_gb),
                "status": "READY",
                "selfLink": LINK_BASE + path,
            }
        return path

    def add_network(self, name: str, project: str | None = None) -> str:
        project = project or self.project
        path = f"projects/{project}/global/networks/{name}"
        with self._cond:
            self._networks[(project, name)] = {"name": name, "selfLink": LINK_BASE + path}
        return path

    def add_subnetwork(
        self, name: str, region: str, cidr: str, network: str = "default", project: str | None = None
    ) -> str:
        project = project or self.project
        path = f"projects/{project}/regions/{region}/subnetworks/{name}"
        with self._cond:
            self._subnetworks[(project, region, name)] = {
                "name": name,
                "network": LINK_BASE + f"projects/{project}/global/networks/{network}",
                "ipCidrRange": cidr,
                "selfLink": LINK_BASE + path,
            }
            hosts = ipaddress.IPv4Network(cidr).hosts()
            next(hosts)  # .1 is the gateway
            self._subnet_hosts[path] = hosts
        return path

    def add_machine_type(self, zone: str, name: str, cpus: int, memory_mb: int, gpus: int = 0) -> None:
        """A machine type; `gpus` attaches that many accelerators to it (like a2/g2 types)."""
        with self._cond:
            self._zones[zone].machine_types[name] = (cpus, memory_mb)
            if gpus:
                self._gpus[name] = gpus

    # ------------------------------------------------------------------ faults

    def fail(
        self,
        api: str,
        status: int,
        *,
        times: int = 1,
        reason: str | None = None,
        message: str | None = None,
        retry_after: float | None = None,
        commit: bool = False,
    ) -> None:
        """Answer the next `times` calls of `api` (e.g. "instances.insert", or "*") with an HTTP error.

        With `commit`, the call takes effect before the error is sent, like a response lost on the way.
        """
        default_reason, domain, default_message = _DEFAULT_FAULT_TEXT.get(
            status, ("backendError", "global", HTTPStatus(status).phrase)
        )
        error = ApiError(status, reason or default_reason, message or default_message, domain, retry_after)
        with self._cond:
            self._faults.append(Fault(api, error, times, commit))

    def exhaust(self, machine_type: str, times: int | None = None) -> None:
        """Inserts of `machine_type` end with ZONE_RESOURCE_POOL_EXHAUSTED (`times` inserts, or until
        `replenish()`)."""
        with self._cond:
            self._exhausted[machine_type] = times

    def hold_operations(self) -> None:
        """Keep every operation RUNNING, whatever its latency, until `release_operations()`."""
        with self._cond:
            self._held = True

    def release_operations(self) -> None:
        with self._cond:
            self._held = False
            self._advance()

    def replenish(self) -> None:
        with self._cond:
            self._exhausted.clear()
            self._faults.clear()

    # ------------------------------------------------------------------ inspection

    def instances(self, zone: str | None = None) -> dict[str, Json]:
        """Instances by name (deep copies), after finishing every operation that is due."""
        with self._cond:
            self._advance()
            zones = [self._zones[zone]] if zone else list(self._zones.values())
            return {name: copy.deepcopy(inst) for z in zones for name, inst in z.instances.items()}

    def disks(self) -> dict[str, Json]:
        with self._cond:
            self._advance()
            return {name: copy.deepcopy(d) for z in self._zones.values() for name, d in z.disks.items()}

    def operations(self) -> list[Json]:
        with self._cond:
            self._advance()
            return [copy.deepcopy(op.resource) for z in self._zones.values() for op in z.operations.values()]

    def requests_for(self, api: str) -> list[RecordedRequest]:
        with self._cond:
            return [r for r in self.requests if r.api == api]

    def insert_bodies(self) -> list[Json]:
        """The Instance bodies of every instances.insert call received, faulted ones included."""
        return [r.body for r in self.requests_for("instances.insert")]

    # ------------------------------------------------------------------ request handling

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Json, dict[str, str]]:
        """Route one HTTP request; returns (status, JSON body, extra headers)."""
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query)
        path = parts.path
        api, route_args = _route(method, path)
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = body.decode(errors="replace")
        record = RecordedRequest(api, method, path, query, parsed, headers, time.monotonic())
        with self._cond:
            self.requests.append(record)
        try:
            if api == "":
                raise ApiError(404, "notFound", f"No such API method: {method} {path}")
            fault = self._take_fault(api)
            if fault is not None and not fault.commit:
                raise fault.error
            result = self._dispatch(api, route_args, query, parsed)
            if fault is not None:
                raise fault.error
        except ApiError as err:
            record.status = err.status
            headers = {} if err.retry_after is None else {"Retry-After": _format_seconds(err.retry_after)}
            return err.status, err.body(), headers
        record.status = 200
        return 200, result, {}

    def _take_fault(self, api: str) -> Fault | None:
        with self._cond:
            self._faults = [f for f in self._faults if f.remaining > 0]
            for fault in self._faults:
                if fault.api in (api, "*"):
                    fault.remaining -= 1
                    return fault
        return None

    def _dispatch(self, api: str, args: dict[str, str], query: dict[str, list[str]], body: Any) -> Json:
        if api == "zoneOperations.wait":
            return self._wait_operation(args)
        with self._cond:
            self._advance()
            if api == "images.get":
                return self._get_image(args["project"], args["name"])
            zone = self._zone(args["project"], args["zone"])
            if api == "instances.insert":
                if not isinstance(body, dict):
                    raise ApiError(400, "parseError", "Parse Error")
                return self._insert(zone, body)
            if api == "instances.get":
                return copy.deepcopy(self._instance(zone, args["name"]))
            if api == "instances.list":
                return self._list(zone, query)
            if api == "instances.delete":
                return self._delete(zone, args["name"])
            if api == "zoneOperations.get":
                return copy.deepcopy(self._operation(zone, args["name"]).resource)
            if api == "machineTypes.get":
                return self._machine_type(zone, args["name"])
            if api == "machineTypes.list":
                items = [self._machine_type(zone, name) for name in sorted(zone.machine_types)]
                return {"kind": "compute#machineTypeList", "items": items}
        raise ApiError(404, "notFound", f"No such API method: {api}")

    # ------------------------------------------------------------------ resources

    def _zone(self, project: str, zone: str) -> _Zone:
        if project != self.project:
            raise _not_found(f"projects/{project}")
        if zone not in self._zones:
            raise _not_found(f"projects/{project}/zones/{zone}")
        return self._zones[zone]

    def _zone_path(self, zone: _Zone) -> str:
        return f"projects/{self.project}/zones/{zone.name}"

    def _get_image(self, project: str, name: str) -> Json:
        image = self._images.get((project, name))
        if image is None:
            raise _not_found(f"projects/{project}/global/images/{name}")
        return copy.deepcopy(image)

    def _instance(self, zone: _Zone, name: str) -> Json:
        instance = zone.instances.get(name)
        if instance is None:
            raise _not_found(f"{self._zone_path(zone)}/instances/{name}")
        return instance

    def _operation(self, zone: _Zone, name: str) -> _Operation:
        operation = zone.operations.get(name)
        if operation is None:
            raise _not_found(f"{self._zone_path(zone)}/operations/{name}")
        return operation

    def _machine_type(self, zone: _Zone, name: str) -> Json:
        spec = zone.machine_types.get(name)
        if spec is None:
            raise _not_found(f"{self._zone_path(zone)}/machineTypes/{name}")
        found: Json = {
            "kind": "compute#machineType",
            "id": str(zlib.crc32(name.encode())),
            "name": name,
            "guestCpus": spec[0],
            "memoryMb": spec[1],
            "zone": zone.name,
            "selfLink": LINK_BASE + f"{self._zone_path(zone)}/machineTypes/{name}",
        }
        if name in self._gpus:
            found["accelerators"] = [
                {"guestAcceleratorType": "nvidia-l4", "guestAcceleratorCount": self._gpus[name]}
            ]
        return found

    def _list(self, zone: _Zone, query: dict[str, list[str]]) -> Json:
        terms = _parse_filter(query.get("filter", [""])[0])
        matching = [inst for _, inst in sorted(zone.instances.items()) if all(t.matches(inst) for t in terms)]
        size = min(int(query.get("maxResults", [str(self.page_size)])[0]), self.page_size)
        start = int(query.get("pageToken", ["0"])[0] or 0)
        page: Json = {
            "kind": "compute#instanceList",
            "id": f"{self._zone_path(zone)}/instances",
            "items": copy.deepcopy(matching[start : start + size]),
            "selfLink": LINK_BASE + f"{self._zone_path(zone)}/instances",
        }
        if start + size < len(matching):
            page["nextPageToken"] = str(start + size)
        return page

    # ------------------------------------------------------------------ insert / delete

    def _insert(self, zone: _Zone, body: Json) -> Json:
        name = body.get("name", "")
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise _invalid(
                "resource.name", name, "Must be a match of regex '(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'"
            )
        zone_path = self._zone_path(zone)
        if name in zone.instances:
            raise ApiError(
                409, "alreadyExists", f"The resource '{zone_path}/instances/{name}' already exists"
            )
        machine_type = self._check_machine_type(zone, body.get("machineType", ""))
        self._check_labels(body.get("labels") or {})
        self._check_metadata(body.get("metadata") or {})
        self._check_confidential(body, machine_type)
        boot = self._check_boot_disk(zone, body.get("disks") or [], name)
        nics = [self._check_nic(zone, i, nic) for i, nic in enumerate(body.get("networkInterfaces") or [])]
        if not nics:
            raise ApiError(400, "required", "Required field 'resource.networkInterfaces' not specified")

        instance_id = str(next(self._ids))
        self_link = LINK_BASE + f"{zone_path}/instances/{name}"
        disk_name = boot["name"]
        disk_link = LINK_BASE + f"{zone_path}/disks/{disk_name}"
        zone.disks[disk_name] = {
            "kind": "compute#disk",
            "name": disk_name,
            "sizeGb": str(boot["sizeGb"]),
            "sourceImage": LINK_BASE + boot["image"],
            "type": LINK_BASE + f"{zone_path}/diskTypes/{boot['diskType']}",
            "users": [self_link],
            "selfLink": disk_link,
        }
        blank = self._create_blank_disks(zone, name, self_link, (body.get("disks") or [])[1:])
        instance = copy.deepcopy(body)
        instance.update(
            {
                "kind": "compute#instance",
                "id": instance_id,
                "creationTimestamp": _timestamp(),
                "status": "PROVISIONING",
                "zone": LINK_BASE + zone_path,
                "machineType": LINK_BASE + f"{zone_path}/machineTypes/{machine_type}",
                "networkInterfaces": nics,
                "disks": [
                    {
                        "kind": "compute#attachedDisk",
                        "type": "PERSISTENT",
                        "mode": "READ_WRITE",
                        "source": disk_link,
                        "deviceName": disk_name,
                        "index": 0,
                        "boot": True,
                        "autoDelete": boot["autoDelete"],
                        "diskSizeGb": str(boot["sizeGb"]),
                    },
                    *blank,
                ],
                "selfLink": self_link,
            }
        )
        instance.setdefault("metadata", {})["kind"] = "compute#metadata"
        zone.instances[name] = instance

        def finish() -> Json | None:
            if self._take_capacity(machine_type):
                return None
            self._forget_instance(zone, name)
            message = (
                f"The zone '{zone_path}' does not have enough resources available to fulfill "
                "the request.  Try a different zone, or try again later."
            )
            return {"code": "ZONE_RESOURCE_POOL_EXHAUSTED", "message": message}

        def started() -> None:
            if name in zone.instances:
                zone.instances[name]["status"] = "RUNNING"

        return self._start_operation(zone, "insert", self_link, instance_id, finish, started)

    def _take_capacity(self, machine_type: str) -> bool:
        if machine_type not in self._exhausted:
            return True
        remaining = self._exhausted[machine_type]
        if remaining is not None:
            if remaining <= 1:
                del self._exhausted[machine_type]
            else:
                self._exhausted[machine_type] = remaining - 1
        return False

    def _forget_instance(self, zone: _Zone, name: str) -> None:
        instance = zone.instances.pop(name, None)
        if instance is None:
            return
        for attached in instance.get("disks", []):
            if attached.get("autoDelete"):
                zone.disks.pop(attached["source"].rsplit("/", 1)[1], None)

    def _delete(self, zone: _Zone, name: str) -> Json:
        instance = self._instance(zone, name)
        instance["status"] = "STOPPING"

        def finish() -> Json | None:
            self._forget_instance(zone, name)
            return None

        return self._start_operation(zone, "delete", instance["selfLink"], instance["id"], finish, None)

    def _start_operation(
        self,
        zone: _Zone,
        kind: str,
        target: str,
        target_id: str,
        finish: Callable[[], Json | None],
        started: Callable[[], None] | None,
    ) -> Json:
        op_name = f"operation-{int(time.time() * 1000)}-{next(self._ids):x}"
        zone_path = self._zone_path(zone)
        resource: Json = {
            "kind": "compute#operation",
            "id": str(next(self._ids)),
            "name": op_name,
            "zone": LINK_BASE + zone_path,
            "operationType": kind,
            "targetLink": target,
            "targetId": target_id,
            "status": "RUNNING",
            "user": "fake@example.com",
            "progress": 0,
            "insertTime": _timestamp(),
            "startTime": _timestamp(),
            "selfLink": LINK_BASE + f"{zone_path}/operations/{op_name}",
        }

        def complete() -> Json | None:
            error = finish()
            if error is None and started is not None:
                started()
            return error

        zone.operations[op_name] = _Operation(resource, time.monotonic() + self.op_latency_s, complete)
        answer = copy.deepcopy(resource)  # answered RUNNING, as Compute Engine does, even at zero latency
        self._advance()
        return answer

    def _advance(self) -> None:
        """Finish every operation whose latency has passed (called with the lock held)."""
        if self._held:
            return
        now = time.monotonic()
        finished = False
        for zone in self._zones.values():
            for operation in zone.operations.values():
                if operation.on_done is None or now < operation.done_at:
                    continue
                error = operation.on_done()
                operation.on_done = None
                resource = operation.resource
                resource.update({"status": "DONE", "progress": 100, "endTime": _timestamp()})
                if error is not None:
                    resource["error"] = {"errors": [error]}
                    resource["httpErrorStatusCode"] = 503
                    resource["httpErrorMessage"] = "SERVICE UNAVAILABLE"
                finished = True
        if finished:
            self._cond.notify_all()

    def _wait_operation(self, args: dict[str, str]) -> Json:
        """zoneOperations.wait: block until the operation is DONE or the wait deadline passes."""
        deadline = time.monotonic() + self.wait_timeout_s
        with self._cond:
            while True:
                self._advance()
                operation = self._operation(self._zone(args["project"], args["zone"]), args["name"])
                now = time.monotonic()
                if operation.resource["status"] == "DONE" or now >= deadline or self._stopping:
                    return copy.deepcopy(operation.resource)
                wake = deadline if self._held else min(deadline, operation.done_at)
                self._cond.wait(timeout=max(0.0, wake - now))

    # ------------------------------------------------------------------ validation

    def _check_machine_type(self, zone: _Zone, value: str) -> str:
        path = _strip_link(value)
        match = re.fullmatch(r"(?:projects/[^/]+/)?zones/([^/]+)/machineTypes/([^/]+)", path)
        if match is None or match.group(1) != zone.name:
            raise _invalid("resource.machineType", value, "Must be a URL of a machine type in the zone.")
        if match.group(2) not in zone.machine_types:
            raise _invalid(
                "resource.machineType",
                value,
                f"Machine type with name '{match.group(2)}' does not exist in zone '{zone.name}'.",
            )
        return match.group(2)

    def _check_labels(self, labels: Json) -> None:
        if len(labels) > _MAX_LABELS:
            raise _invalid(
                "resource.labels", len(labels), f"Resources can have at most {_MAX_LABELS} labels."
            )
        for key, value in labels.items():
            if not _LABEL_KEY_RE.fullmatch(key):
                raise _invalid(
                    "resource.labels",
                    key,
                    "Label keys must start with a lowercase letter and "
                    "contain only lowercase letters, digits, '_' and '-', at most 63 characters.",
                )
            if not isinstance(value, str) or not _LABEL_VALUE_RE.fullmatch(value):
                raise _invalid(
                    f"resource.labels.{key}",
                    value,
                    "Label values may contain only lowercase "
                    "letters, digits, '_' and '-', at most 63 characters.",
                )

    def _check_metadata(self, metadata: Json) -> None:
        for index, item in enumerate(metadata.get("items") or []):
            key, value = item.get("key", ""), item.get("value", "")
            if not _METADATA_KEY_RE.fullmatch(key):
                raise _invalid(
                    f"resource.metadata.items[{index}].key", key, "Must match [a-zA-Z0-9-_]{1,128}."
                )
            if len(value.encode()) > _METADATA_VALUE_MAX:
                raise _invalid(f"resource.metadata.items[{index}].value", "...", "Metadata value too large.")

    def _check_confidential(self, body: Json, machine_type: str) -> None:
        config = body.get("confidentialInstanceConfig")
        if not config:
            return
        kind = config.get("confidentialInstanceType", "")
        if kind not in CONFIDENTIAL_TYPES:
            raise _invalid(
                "resource.confidentialInstanceConfig.confidentialInstanceType",
                kind,
                f"Must be one of {', '.join(CONFIDENTIAL_TYPES)}.",
            )
        family = machine_type.split("-", 1)[0]
        if family not in CVM_FAMILIES[kind]:
            raise _invalid(
                "resource.machineType",
                machine_type,
                f"Confidential instance type {kind} is not supported for machine type {machine_type}.",
            )
        maintenance = (body.get("scheduling") or {}).get("onHostMaintenance", "MIGRATE")
        if kind != "SEV" and maintenance != "TERMINATE":
            raise _invalid(
                "resource.scheduling.onHostMaintenance",
                maintenance,
                "Confidential VMs of this type do not support live migration; use TERMINATE.",
            )

    def _create_blank_disks(self, zone: _Zone, name: str, link: str, disks: list[Json]) -> list[Json]:
        """Empty non-boot disks (`initializeParams.diskSizeGb`, no image), named `<instance>-<deviceName>`;
        deleted with the instance when `autoDelete`, as GCE does."""
        attached: list[Json] = []
        for index, disk in enumerate(disks, start=1):
            params = disk.get("initializeParams") or {}
            size = int(params.get("diskSizeGb", 0))
            if size <= 0 or params.get("sourceImage"):
                raise _invalid(f"resource.disks[{index}].initializeParams", params, "Blank disk: no size")
            device = disk.get("deviceName") or f"persistent-disk-{index}"
            disk_name = f"{name}-{device}"
            disk_link = LINK_BASE + f"{self._zone_path(zone)}/disks/{disk_name}"
            zone.disks[disk_name] = {
                "kind": "compute#disk",
                "name": disk_name,
                "sizeGb": str(size),
                "users": [link],
                "selfLink": disk_link,
            }
            attached.append(
                {
                    "kind": "compute#attachedDisk",
                    "type": "PERSISTENT",
                    "mode": "READ_WRITE",
                    "source": disk_link,
                    "deviceName": device,
                    "index": index,
                    "boot": False,
                    "autoDelete": bool(disk.get("autoDelete")),
                    "diskSizeGb": str(size),
                }
            )
        return attached

    def _check_boot_disk(self, zone: _Zone, disks: list[Json], instance_name: str) -> Json:
        boot = [d for d in disks if d.get("boot")]
        if len(boot) != 1 or not disks[0].get("boot"):
            raise ApiError(400, "invalid", "Exactly one boot disk, the first, is supported by this fake.")
        disk = boot[0]
        params = disk.get("initializeParams") or {}
        image_value = params.get("sourceImage", "")
        image_path = _strip_link(image_value)
        match = re.fullmatch(r"projects/([^/]+)/global/images/([^/]+)", image_path)
        if match is None:
            raise _invalid(
                "resource.disks[0].initializeParams.sourceImage", image_value, "The URL is malformed."
            )
        image = self._images.get((match.group(1), match.group(2)))
        if image is None:
            raise _not_found(image_path)
        image_size = int(image["diskSizeGb"])
        size = int(params.get("diskSizeGb", image_size))
        if size < image_size:
            raise _invalid(
                "resource.disks[0].initializeParams.diskSizeGb",
                size,
                f"Requested disk size cannot be smaller than the image size ({image_size} GB)",
            )
        disk_type_value = params.get("diskType", f"zones/{zone.name}/diskTypes/pd-standard")
        type_match = re.fullmatch(
            r"(?:projects/[^/]+/)?zones/([^/]+)/diskTypes/([^/]+)", _strip_link(disk_type_value)
        )
        if type_match is None or type_match.group(1) != zone.name or type_match.group(2) not in DISK_TYPES:
            raise _invalid(
                "resource.disks[0].initializeParams.diskType",
                disk_type_value,
                "The disk type does not exist in the zone.",
            )
        return {
            "name": params.get("diskName") or instance_name,
            "sizeGb": size,
            "image": image_path,
            "diskType": type_match.group(2),
            "autoDelete": bool(disk.get("autoDelete", False)),
        }

    def _check_nic(self, zone: _Zone, index: int, nic: Json) -> Json:
        field_prefix = f"resource.networkInterfaces[{index}]"
        network_value = nic.get("network") or "global/networks/default"
        network_path = _strip_link(network_value)
        if not network_path.startswith("projects/"):
            network_path = f"projects/{self.project}/{network_path}"
        net = re.fullmatch(r"projects/([^/]+)/global/networks/([^/]+)", network_path)
        if net is None:
            raise _invalid(f"{field_prefix}.network", network_value, "The URL is malformed.")
        if (net.group(1), net.group(2)) not in self._networks:
            raise _not_found(network_path)
        subnet_value = nic.get("subnetwork") or f"regions/{zone.region}/subnetworks/{net.group(2)}"
        subnet_path = _strip_link(subnet_value)
        if not subnet_path.startswith("projects/"):
            subnet_path = f"projects/{self.project}/{subnet_path}"
        sub = re.fullmatch(r"projects/([^/]+)/regions/([^/]+)/subnetworks/([^/]+)", subnet_path)
        subnet = self._subnetworks.get((sub.group(1), sub.group(2), sub.group(3))) if sub else None
        if sub is None or subnet is None or sub.group(2) != zone.region:
            raise _invalid(
                f"{field_prefix}.subnetwork",
                subnet_value,
                "The referenced subnetwork resource cannot be found.",
            )
        if subnet["network"] != LINK_BASE + network_path:
            raise _invalid(
                f"{field_prefix}.subnetwork",
                subnet_value,
                "Subnetwork should belong to the network the interface refers to.",
            )
        result: Json = {
            "kind": "compute#networkInterface",
            "name": f"nic{index}",
            "network": LINK_BASE + network_path,
            "subnetwork": LINK_BASE + subnet_path,
            "networkIP": str(next(self._subnet_hosts[subnet_path])),
            "stackType": nic.get("stackType", "IPV4_ONLY"),
        }
        configs = []
        for config in nic.get("accessConfigs") or []:
            configs.append(
                {
                    "kind": "compute#accessConfig",
                    "type": config.get("type", "ONE_TO_ONE_NAT"),
                    "name": config.get("name", "External NAT"),
                    "natIP": config.get("natIP") or str(next(self._nat_hosts)),
                    "networkTier": config.get("networkTier", "PREMIUM"),
                }
            )
        if configs:
            result["accessConfigs"] = configs
        return result


# ---------------------------------------------------------------------- list filters


@dataclass(frozen=True)
class _FilterTerm:
    path: tuple[str, ...]
    negate: bool
    value: str

    def matches(self, instance: Json) -> bool:
        current: Any = instance
        for part in self.path:
            current = current.get(part) if isinstance(current, dict) else None
        return (current is not None and str(current) == self.value) != self.negate


_TERM_RE = re.compile(r'\s*\(?\s*([A-Za-z][\w.-]*)\s*(=|!=)\s*("(?:[^"\\]|\\.)*"|[^\s()]+)\s*\)?\s*')


def _parse_filter(text: str) -> list[_FilterTerm]:
    """Compute Engine list filters of the form `a.b = v`, `(a = v) AND (b != "w")`; others are 400."""
    terms: list[_FilterTerm] = []
    rest = text.strip()
    while rest:
        match = _TERM_RE.match(rest)
        if match is None:
            raise ApiError(400, "invalid", "Invalid list filter expression.")
        field_path, operator, value = match.groups()
        if value.startswith('"'):
            value = json.loads(value)
        terms.append(_FilterTerm(tuple(field_path.split(".")), operator == "!=", value))
        rest = rest[match.end() :]
        if rest.upper().startswith("AND "):
            rest = rest[4:]
    return terms


# ---------------------------------------------------------------------- HTTP plumbing

_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile("/compute/v1/projects/(?P<project>[^/]+)/" + pattern), api)
    for method, pattern, api in [
        ("POST", r"zones/(?P<zone>[^/]+)/instances", "instances.insert"),
        ("GET", r"zones/(?P<zone>[^/]+)/instances", "instances.list"),
        ("GET", r"zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)", "instances.get"),
        ("DELETE", r"zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)", "instances.delete"),
        ("GET", r"zones/(?P<zone>[^/]+)/operations/(?P<name>[^/]+)", "zoneOperations.get"),
        ("POST", r"zones/(?P<zone>[^/]+)/operations/(?P<name>[^/]+)/wait", "zoneOperations.wait"),
        ("GET", r"zones/(?P<zone>[^/]+)/machineTypes", "machineTypes.list"),
        ("GET", r"zones/(?P<zone>[^/]+)/machineTypes/(?P<name>[^/]+)", "machineTypes.get"),
        ("GET", r"global/images/(?P<name>[^/]+)", "images.get"),
    ]
]


def _route(method: str, path: str) -> tuple[str, dict[str, str]]:
    for route_method, pattern, api in _ROUTES:
        match = pattern.fullmatch(path)
        if match is not None and route_method == method:
            return api, match.groupdict()
    return "", {}


def _handler_for(fake: FakeCompute) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, payload, headers = fake.handle(self.command, self.path, dict(self.headers.items()), body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime())


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def decode_user_data(instance_body: Json) -> bytes:
    """The user data of an Instance body, decoded from its base64 `user-data` metadata item."""
    items = {i["key"]: i["value"] for i in (instance_body.get("metadata") or {}).get("items", [])}
    if items.get("user-data-encoding") != "base64":
        raise ValueError("user-data is not marked as base64")
    return base64.b64decode(items["user-data"])
