"""Which sandbox and pod a log line concerns: fields on every JSON log line of a hypervisor call."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextlib import AbstractContextManager

from adaptor.annotations import AnnotationError, check_sandbox_id, pod_info
from adaptor.state import SandboxRecord
from protocols.daemon import log_fields


def about_sandbox(
    sandbox_id: str, record: SandboxRecord | None = None, annotations: Mapping[str, str] | None = None
) -> AbstractContextManager[None]:
    """The sandbox's id and its pod's name and namespace: from its record, else CreateVM's annotations."""
    try:
        check_sandbox_id(sandbox_id)
    except AnnotationError:
        return contextlib.nullcontext()  # a malformed id never reaches a log line
    name = namespace = ""
    if record is not None:
        name, namespace = record.pod_name, record.pod_namespace
    elif annotations is not None:
        with contextlib.suppress(AnnotationError):
            pod = pod_info(annotations)
            name, namespace = pod.name, pod.namespace
    return log_fields(sandbox_id=sandbox_id, pod_name=name, pod_namespace=namespace)
