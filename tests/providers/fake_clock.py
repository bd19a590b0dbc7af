"""A clock for rate-limiter tests: time moves only when someone sleeps on it, so nothing depends on speed."""

from __future__ import annotations

import asyncio


class FakeClock:
    """Pass the instance as `clock` and its `sleep` as `sleep` to a RateLimiter or CloudCaller."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)
