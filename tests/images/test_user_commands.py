"""The README's two commands for publishing an encrypted image, as a user runs them: `kbs-client
config set-resource` puts the KEK into the KBS, then the image is encrypted through the key provider
named `attestation-agent` (Go ocicrypt standing in for a key-provider-capable skopeo) and pushed; the
pod VM's CDH pulls and decrypts it."""

from __future__ import annotations

import asyncio
import os
import sys

import aiohttp
from cryptography.hazmat.primitives import serialization

from tests.images.cdh_support import HELLO, KEY_PATH, LAYERS, World, cdh, pull
from tests.images.gocrypt import encrypt_oci_image, provider_config
from tests.images.registry import make_oci_image, running_registry, skopeo
from tests.kbs.support import start_kbs


async def test_kbs_client_then_encrypted_push_then_guest_pull(tmp_path):
    kbs = await start_kbs(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            await kbs.set_policies(http)
        admin = tmp_path / "admin.pem"
        admin.write_bytes(
            kbs.admin.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        kek = tmp_path / "app.kek"
        kek.write_bytes(os.urandom(32))
        # Command 1: the KEK into the KBS.
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "kbs.client.cli",
            "--url",
            kbs.url,
            "config",
            "--auth-private-key",
            str(admin),
            "--issuer",
            "test-admin",
            "set-resource",
            "--path",
            KEY_PATH,
            "--resource-file",
            str(kek),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        # Command 2: encrypt through the provider named as upstream's guest expects, push.
        make_oci_image(tmp_path / "plain", LAYERS)
        config = provider_config(tmp_path / "ocicrypt.json", name="attestation-agent")
        key = f"provider:attestation-agent:keypath={kek}::keyid=kbs:///{KEY_PATH}"
        await encrypt_oci_image(tmp_path / "plain", tmp_path / "enc", key, config)
        with running_registry(tmp_path) as registry:
            pushed = skopeo(
                "copy",
                "--dest-tls-verify=false",
                f"oci:{tmp_path / 'enc'}:latest",
                f"docker://{registry}/app:encrypted",
            )
            assert pushed.returncode == 0, pushed.stderr
            world = World(tmp_path, kbs, registry, kek.read_bytes(), f"{registry}/app:encrypted", "")
            async with cdh(world) as client:
                await pull(client, world.image, tmp_path / "bundle")
        assert (tmp_path / "bundle" / "rootfs" / "bin" / "hello").read_bytes() == HELLO
    finally:
        await kbs.runner.cleanup()
