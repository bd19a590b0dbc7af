"""`python -m tests.e2e`: whether the end-to-end test will run here, and on what (CI prints it)."""

from tests.e2e.conftest import choose_domain_type

chosen, why = choose_domain_type()
print(f"will run on libvirt domain type {chosen} ({why})" if chosen else f"will be skipped: {why}")
