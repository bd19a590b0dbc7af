from __future__ import annotations

import pytest

from tests.terraform.tfmodules import Terraform, find_terraform


@pytest.fixture(scope="session")
def terraform() -> Terraform:
    found = find_terraform()
    if isinstance(found, str):
        pytest.skip(found)
    return found
