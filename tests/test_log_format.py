"""The JSON log format: one object per line, with the fields of the context the line was written in."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

from protocols.daemon import JsonFormatter, log_fields
from providers.retry import CloudCaller, ErrorKind, RateLimiter

log = logging.getLogger("peerpods.test.logformat")


@contextlib.contextmanager
def json_lines() -> Iterator[list[dict[str, Any]]]:
    """What `log` writes inside, in the JSON format, parsed line by line once the block ends."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    parsed: list[dict[str, Any]] = []
    try:
        yield parsed
    finally:
        log.removeHandler(handler)
    parsed.extend(json.loads(line) for line in stream.getvalue().splitlines())


def test_one_line_per_record_whatever_the_message_holds() -> None:
    with json_lines() as lines:
        log.info("two\nlines and a forged one: %s", '\n{"level": "info", "message": "fake"}')
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    assert len(lines) == 2
    first, second = lines
    assert first["message"].startswith("two\nlines") and first["message"].endswith('"fake"}')
    assert (first["level"], first["logger"]) == ("info", log.name)
    assert second["level"] == "error" and "ValueError: boom" in second["exception"]


async def test_fields_reach_the_lines_of_the_block_its_tasks_and_the_sdk_threads() -> None:
    caller = CloudCaller(lambda exc: ErrorKind.FATAL, RateLimiter(100.0, 10), provider="test-logs")

    def sdk_call() -> None:
        log.debug("inside the SDK")  # in one of CloudCaller's worker threads

    async def task() -> None:
        log.info("in a task")

    try:
        with json_lines() as lines:
            with log_fields(sandbox_id="sb-1", pod_name="web", pod_namespace="shop"):
                log.info("in the block")
                await asyncio.create_task(task())
                await caller.call(sdk_call)
            log.info("after the block")
    finally:
        caller.close()
    assert [line["message"] for line in lines] == [
        "in the block",
        "in a task",
        "inside the SDK",
        "after the block",
    ]
    for line in lines[:3]:
        assert (line["sandbox_id"], line["pod_name"], line["pod_namespace"]) == ("sb-1", "web", "shop"), line
    assert "sandbox_id" not in lines[3]
