"""Fixtures the pod network tests share with the adaptor tests."""

from tests.adaptor.conftest import short_dir

__all__ = ["short_dir"]
