"""The GCP provider: Compute Engine instances through google-cloud-compute's REST transport.

Every SDK call goes through one `CloudCaller` (shared rate limit, our retries) with google-api-core's
own retries turned off (`retry=None`) and an explicit timeout. The generated clients retry `get`,
`list` and `zoneOperations.get` on 503 for up to 600 s by default: those hidden retries would run
inside one rate-limiter token (bypassing the client-side limit), multiply with ours, and keep a
throttled caller hammering the API instead of backing off with everybody else.

Operations are awaited with zoneOperations.wait (the server holds the call until the operation is
done or about two minutes pass), which costs one API call per wait instead of a poll loop.
Note that `ExtendedOperation.result()` cannot be used with an endpoint override: the SDK's internal
operations client ignores `client_options` and polls compute.googleapis.com.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.auth import credentials as ga_credentials
from google.cloud import compute_v1

from providers.base import (
    CapacityError,
    CreateRequest,
    Instance,
    InstanceNotFound,
    InvalidRequestError,
    ProviderError,
)
from providers.gcp import errors
from providers.gcp.config import SETTINGS, GcpConfig, ImageRef, load_credentials, parse_config, parse_image
from providers.gcp.instance import InstancePlan, belongs_to, build_instance, is_owned_by, to_instance
from providers.gcp.labels import OWNER_LABEL, label_value, owned_labels, to_labels
from providers.instance_types import InstanceTypeSpec, fallback_types, select_instance_type
from providers.retry import (
    RATE_LIMIT_SETTINGS,
    CloudCaller,
    RateLimiter,
    RetryPolicy,
    rate_limiter_from_config,
)
from providers.settings import ConfigError, Setting, SettingValue

_log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 60.0
# Compute Engine answers a wait after at most ~2 minutes; the HTTP timeout must outlast that.
WAIT_CALL_TIMEOUT_S = 150.0
WAIT_WORKERS = 256
_NAME_RE = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
_DONE = compute_v1.Operation.Status.DONE
DEFAULT_POLICY = RetryPolicy()


class GcpProvider:
    """Pod VMs as Compute Engine instances; the instance id is the instance name (as upstream)."""

    name = "gcp"

    def __init__(
        self,
        config: GcpConfig,
        owner: str,
        credentials: ga_credentials.Credentials,
        limiter: RateLimiter,
        *,
        policy: RetryPolicy = DEFAULT_POLICY,
        operation_timeout_s: float = 600.0,
    ) -> None:
        if not owner:
            raise ValueError("owner id must not be empty")
        self.config = config
        self._owner = owner
        self._operation_timeout_s = operation_timeout_s
        options = ClientOptions(api_endpoint=config.endpoint) if config.endpoint else None
        client_args: dict[str, Any] = {
            "credentials": credentials,
            "client_options": options,
            "transport": "rest",
        }
        self._instances = compute_v1.InstancesClient(**client_args)
        self._operations = compute_v1.ZoneOperationsClient(**client_args)
        self._machine_types = compute_v1.MachineTypesClient(**client_args)
        self._images = compute_v1.ImagesClient(**client_args)
        self._caller = CloudCaller(errors.classify, limiter, policy, errors.retry_after, provider="gcp")
        # zoneOperations.wait holds its thread for up to two minutes: waits get their own, larger pool
        # (same limiter and policy), so that many VMs booting at once never starve inserts and gets.
        self._waiter = CloudCaller(
            errors.classify, limiter, policy, errors.retry_after, workers=WAIT_WORKERS, provider="gcp"
        )
        self._type_specs: list[InstanceTypeSpec] | None = None
        self._type_specs_lock = asyncio.Lock()
        self._image_sizes: dict[str, int] = {}

    # ------------------------------------------------------------------ blocking SDK calls

    def _zonal(self, zone: str = "") -> dict[str, Any]:
        return {
            "project": self.config.project,
            "zone": zone or self.config.zone,
            "retry": None,
            "timeout": CALL_TIMEOUT_S,
        }

    def _insert_sync(self, body: compute_v1.Instance) -> str | None:
        """The operation name, or None when an instance with this name exists already."""
        try:
            return str(self._instances.insert(instance_resource=body, **self._zonal()).name)
        except api_exceptions.Conflict:
            return None
        except api_exceptions.NotFound as exc:  # the image, network or subnetwork
            raise InvalidRequestError(str(exc)) from exc

    def _get_sync(self, name: str) -> compute_v1.Instance:
        return self._instances.get(instance=name, **self._zonal())

    def _delete_sync(self, name: str, zone: str = "") -> str:
        return str(self._instances.delete(instance=name, **self._zonal(zone)).name)

    def _list_sync(self) -> list[compute_v1.Instance]:
        request = compute_v1.ListInstancesRequest(
            project=self.config.project,
            zone=self.config.zone,
            filter=f"labels.{OWNER_LABEL} = {label_value(self._owner)}",
        )
        # The pager fetches further pages lazily with the same retry/timeout: drain it in this thread.
        return list(self._instances.list(request=request, retry=None, timeout=CALL_TIMEOUT_S))

    def _wait_sync(self, operation: str) -> compute_v1.Operation:
        return self._operations.wait(
            project=self.config.project,
            zone=self.config.zone,
            operation=operation,
            retry=None,
            timeout=WAIT_CALL_TIMEOUT_S,
        )

    def _machine_type_sync(self, name: str) -> InstanceTypeSpec:
        try:
            found = self._machine_types.get(machine_type=name, **self._zonal())
        except api_exceptions.NotFound as exc:
            raise InvalidRequestError(f"machine type {name!r} in zone {self.config.zone}: {exc}") from exc
        gpus = sum(int(a.guest_accelerator_count) for a in found.accelerators)
        return InstanceTypeSpec(name, int(found.guest_cpus), int(found.memory_mb), gpus)

    def _image_size_sync(self, image: ImageRef) -> int:
        try:
            found = self._images.get(
                project=image.project, image=image.name, retry=None, timeout=CALL_TIMEOUT_S
            )
        except api_exceptions.NotFound as exc:
            raise InvalidRequestError(f"pod VM image {image.source}: {exc}") from exc
        return int(found.disk_size_gb)

    # ------------------------------------------------------------------ helpers

    async def _wait(self, operation: str) -> None:
        """Wait for an operation; raise the provider error for a failed one."""
        deadline = time.monotonic() + self._operation_timeout_s
        while True:
            op = await self._waiter.call(self._wait_sync, operation)
            if op.status == _DONE:
                break
            if time.monotonic() >= deadline:
                raise ProviderError(f"operation {operation} not done after {self._operation_timeout_s:.0f}s")
        codes = [(str(e.code), str(e.message)) for e in op.error.errors]
        if codes or op.http_error_status_code >= 400:
            raise errors.operation_failure(codes, int(op.http_error_status_code), str(op.http_error_message))

    async def validate(self) -> None:
        """The machine types and the default image exist (which also proves the credentials work)."""
        problems: list[str] = []
        try:
            await self._allowed_types()
        except ProviderError as exc:
            problems.append(f"-machine-type / -machine-types (GCP_MACHINE_TYPE / GCP_INSTANCE_TYPES): {exc}")
        if self.config.image is not None:
            try:
                await self._image_size(self.config.image)
            except ProviderError as exc:
                problems.append(f"-image-name (PODVM_IMAGE_NAME): {exc}")
        if problems:
            raise ConfigError(problems)

    async def _allowed_types(self) -> tuple[list[InstanceTypeSpec], InstanceTypeSpec | None]:
        """Specs of GCP_INSTANCE_TYPES (or of the default type alone), fetched once."""
        async with self._type_specs_lock:
            if self._type_specs is None:
                names = self.config.machine_types or (self.config.machine_type,)
                self._type_specs = [await self._caller.call(self._machine_type_sync, n) for n in names]
        if self.config.machine_types:
            return self._type_specs, None
        return [], self._type_specs[0]

    async def _image_size(self, image: ImageRef) -> int:
        if image.source not in self._image_sizes:
            self._image_sizes[image.source] = await self._caller.call(self._image_size_sync, image)
        return self._image_sizes[image.source]

    def _image_for(self, request: CreateRequest) -> ImageRef:
        if request.spec.image:
            try:
                return parse_image(request.spec.image, self.config.project)
            except ValueError as exc:
                raise InvalidRequestError(f"image annotation: {exc}") from None
        if self.config.image is None:
            raise InvalidRequestError("no pod VM image: set PODVM_IMAGE_NAME or the pod's image annotation")
        return self.config.image

    def _labels_for(self, request: CreateRequest) -> dict[str, str]:
        try:
            extra = {**self.config.labels, **to_labels(request.tags)}
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
        return owned_labels(extra, self._owner, request.sandbox_id)

    async def _adopt(self, request: CreateRequest) -> Instance:
        """The name is taken: return the instance if an earlier attempt created it for this sandbox."""
        try:
            existing = await self._caller.call(self._get_sync, request.name)
        except InstanceNotFound:
            raise ProviderError(f"instance {request.name} already exists but vanished; retry") from None
        if not belongs_to(existing, self._owner, request.sandbox_id):
            raise InvalidRequestError(
                f"instance name {request.name} is taken by an instance of another sandbox or owner"
            )
        _log.info("instance %s already exists for sandbox %s; reusing it", request.name, request.sandbox_id)
        return to_instance(existing)

    async def _discard(self, name: str) -> None:
        """Best-effort removal of what a failed insert may have left (usually nothing)."""
        try:
            await self._wait(await self._caller.call(self._delete_sync, name))
        except InstanceNotFound:
            return
        except ProviderError as exc:
            _log.warning("could not remove instance %s after a failed create: %s", name, exc)

    async def _create_as(self, request: CreateRequest, plan: InstancePlan) -> Instance:
        operation = await self._caller.call(self._insert_sync, build_instance(self.config, plan))
        if operation is None:
            return await self._adopt(request)
        try:
            await self._wait(operation)
        except ProviderError:
            await self._discard(plan.name)
            raise
        created = to_instance(await self._caller.call(self._get_sync, plan.name))
        return replace(created, delete_info={"zone": self.config.zone})

    # ------------------------------------------------------------------ Provider

    async def create_instance(self, request: CreateRequest) -> Instance:
        if not _NAME_RE.fullmatch(request.name):
            raise InvalidRequestError(
                f"instance name {request.name!r} is not a GCP name: lowercase letters, digits and '-', "
                "starting with a letter, at most 63 characters"
            )
        image = self._image_for(request)
        labels = self._labels_for(request)
        allowed, default_spec = await self._allowed_types()
        selected = select_instance_type(
            request.spec, self.config.machine_type, allowed, default_spec=default_spec
        )
        disk_size = max(await self._image_size(image), self.config.root_volume_size_gb)
        gpus_by_type = {
            spec.name: spec.gpus for spec in [*allowed, *([default_spec] if default_spec else [])]
        }
        last: CapacityError | None = None
        for machine_type in fallback_types(selected, request.spec, allowed):
            plan = InstancePlan(
                name=request.name,
                machine_type=machine_type,
                image=image,
                disk_size_gb=disk_size,
                user_data=request.user_data,
                labels=labels,
                owner=self._owner,
                sandbox_id=request.sandbox_id,
                gpus=max(request.spec.gpus, gpus_by_type.get(machine_type, 0)),
                scratch_disk_gb=request.scratch_space_gib,
            )
            try:
                return await self._create_as(request, plan)
            except CapacityError as exc:
                _log.warning("no capacity for %s in %s: %s", machine_type, self.config.zone, exc)
                last = exc
        assert last is not None  # fallback_types always yields the selected type
        raise last

    async def delete_instance(self, instance_id: str) -> None:
        _check_name(instance_id)
        await self._wait(await self._caller.call(self._delete_sync, instance_id))

    async def delete_recorded(self, instance_id: str, delete_info: Mapping[str, str]) -> None:
        """One instances.delete in the zone the instance was created in (GCP_ZONE may have changed
        since), its operation not waited for: the boot disk goes with the instance (autoDelete)."""
        _check_name(instance_id)
        await self._caller.call(self._delete_sync, instance_id, delete_info.get("zone", ""))
        _log.info("instance %s: deletion accepted", instance_id)

    async def list_instances(self) -> list[Instance]:
        found = await self._caller.call(self._list_sync)
        return [to_instance(i) for i in found if is_owned_by(i, self._owner)]

    async def teardown(self) -> None:
        self._caller.close()
        self._waiter.close()
        for client in (self._instances, self._operations, self._machine_types, self._images):
            client.transport.close()  # type: ignore[no-untyped-call]


def _check_name(instance_id: str) -> None:
    if not _NAME_RE.fullmatch(instance_id):
        raise InstanceNotFound(f"{instance_id!r} is not a GCP instance name")


class GcpPlugin:
    """Entry point for `cloud-api-adaptor gcp`."""

    name = "gcp"
    settings: Sequence[Setting] = (*SETTINGS, *RATE_LIMIT_SETTINGS)

    def create(self, config: Mapping[str, SettingValue | None], owner: str) -> GcpProvider:
        problems: list[str] = []
        parsed: GcpConfig | None = None
        limiter: RateLimiter | None = None
        credentials: ga_credentials.Credentials | None = None
        try:
            parsed = parse_config(config)
        except ConfigError as exc:
            problems += exc.problems
        try:
            limiter = rate_limiter_from_config(config)
        except ConfigError as exc:
            problems += exc.problems
        secret, endpoint = config.get("gcp_credentials"), config.get("gcp_api_endpoint")
        endpoint = endpoint.strip() if isinstance(endpoint, str) else ""
        try:
            credentials = load_credentials(secret if isinstance(secret, str) else "", endpoint)
        except ConfigError as exc:
            problems += exc.problems
        if problems or parsed is None or limiter is None or credentials is None:
            raise ConfigError(problems)
        return GcpProvider(parsed, owner, credentials, limiter)


PLUGIN = GcpPlugin()
