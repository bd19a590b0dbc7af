"""Go-style durations as PROXY_TIMEOUT and the frame deadline take them."""

from __future__ import annotations

import pytest

from adaptor.config import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300.0), ("1m30s", 90.0), ("300ms", 0.3), ("200ms", 0.2), ("1h", 3600.0), ("90", 90.0),
     ("1.5", 1.5)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["inf", "nan", "-5", "-5s", "1e3", "5 m", "", "soon", "1e999"])
def test_what_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
