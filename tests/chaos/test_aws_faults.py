"""EC2 faults seen through the real AWS provider: a 500 whose body is not EC2's XML is retried."""

from __future__ import annotations

from pathlib import Path

from providers.aws import PLUGIN
from providers.base import CreateRequest
from providers.settings import resolve
from tests.chaos.harness import aws_cloud

# What a proxy in front of EC2, or moto's web server when it trips, answers: no EC2 error document.
HTML_500 = (
    b"<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n"
    b"<h1>Internal Server Error</h1>\n"
)


async def test_unparseable_server_error_is_retried(tmp_path: Path, moto_url: str) -> None:
    async with aws_cloud(tmp_path / "cloud", moto_url=moto_url, boot_pod_vms=False) as cloud:
        provider = PLUGIN.create(resolve(PLUGIN.settings, None, cloud.adaptor_env("faults")), "faults")
        try:
            await provider.validate()
            cloud.front.fail("RunInstances", 500, HTML_500, content_type="text/html")
            instance = await provider.create_instance(CreateRequest("podvm-a-12345678", "sb-a", b""))
        finally:
            await provider.teardown()
        assert cloud.front.calls["RunInstances"] == 2
        assert await cloud.owned_instances("faults") == {instance.id: "sb-a"}
