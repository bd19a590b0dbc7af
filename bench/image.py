"""Encrypted images: layer decryption throughput and a guest pull, with the figures the issue names.

    python -m bench.image [--sizes-mib 256,1024] [--pull-mib 200] [--repeat 3]

1. Decryption: a layer of random bytes encrypted with `protocols.ocicrypt.layer`, then decrypted by
   `decrypt_file` (verify-then-decrypt: an HMAC pass, then an AES-256-CTR pass) and, as the baseline,
   by plain `cryptography` AES-CTR + HMAC in a single pass over the same file -- both from the page
   cache into /dev/null, each size in a fresh process so its peak RSS shows the memory is constant.
2. Pull: a `--pull-mib` image (one incompressible layer) encrypted through peerpods-keyprovider by Go
   ocicrypt, pushed to a local docker-registry; wall time of the CDH's PullImage (attest to a KBS, get
   the KEK, download, HMAC, decrypt, gunzip, unpack) against `skopeo copy` of the same encrypted image
   to an OCI directory (download only) and of its plaintext twin.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import multiprocessing
import os
import resource
import shutil
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols.ocicrypt import layer

CHUNK = layer.CHUNK_SIZE


def _random_file(path: Path, size: int) -> None:
    with path.open("wb") as out:
        for _ in range(size // CHUNK):
            out.write(os.urandom(CHUNK))


def _baseline(cipher_path: Path, private: layer.PrivateOptions, public: layer.PublicOptions) -> None:
    """What plain `cryptography` does in one pass: decrypt and MAC each chunk, compare at the end."""
    decryptor = Cipher(algorithms.AES(private.symkey), modes.CTR(private.nonce)).decryptor()
    mac = hmac.HMAC(private.symkey, hashes.SHA256())
    with cipher_path.open("rb") as source, open(os.devnull, "wb") as sink:
        while chunk := source.read(CHUNK):
            mac.update(chunk)
            sink.write(decryptor.update(chunk))
    mac.verify(public.hmac)


def _ours(cipher_path: Path, private: layer.PrivateOptions, public: layer.PublicOptions) -> None:
    with cipher_path.open("rb") as source, open(os.devnull, "wb") as sink:
        layer.decrypt_file(source, sink, private, public)


def _measure(size_mib: int, repeat: int, queue: multiprocessing.Queue[tuple[int, float, float, int]]) -> None:
    """Runs in a fresh process: best-of-`repeat` MB/s of ours and of the baseline, and peak RSS."""
    with tempfile.TemporaryDirectory(prefix="bench-image-") as scratch:
        plain, cipher = Path(scratch) / "plain", Path(scratch) / "cipher"
        _random_file(plain, size_mib * 1024 * 1024)
        with plain.open("rb") as source, cipher.open("wb") as target:
            private, public = layer.encrypt_file(source, target)
        plain.unlink()
        times: dict[str, list[float]] = {"ours": [], "baseline": []}
        for _ in range(repeat):  # alternating, so both see the same machine state
            for name, run in (("ours", _ours), ("baseline", _baseline)):
                start = time.perf_counter()
                run(cipher, private, public)
                times[name].append(time.perf_counter() - start)
        results = {name: size_mib * 1.048576 / min(samples) for name, samples in times.items()}
        queue.put(
            (
                size_mib,
                results["ours"],
                results["baseline"],
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            )
        )


def decryption(sizes: list[int], repeat: int) -> None:
    print("layer decryption (MB/s, best of", repeat, "from the page cache; peak RSS of the process)")
    print(f"{'layer':>10} {'ours':>10} {'baseline':>10} {'ratio':>7} {'peak RSS':>10}")
    context = multiprocessing.get_context("spawn")
    for size in sizes:
        queue: multiprocessing.Queue[tuple[int, float, float, int]] = context.Queue()
        child = context.Process(target=_measure, args=(size, repeat, queue))
        child.start()
        size_mib, ours, baseline, rss_kib = queue.get()
        child.join()
        ratio = ours / baseline
        print(f"{size_mib:>7} MiB {ours:>10.0f} {baseline:>10.0f} {ratio:>7.2f} {rss_kib / 1024:>7.0f} MiB")


def _big_image(layout: Path, size_mib: int) -> None:
    """An OCI layout with one layer holding `size_mib` of random bytes (gzip level 1)."""
    from tests.images.registry import make_oci_image

    make_oci_image(layout, [{"x": b""}])  # the layout shell, then the real layer replaces it
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("data/blob")
        info.size = size_mib * 1024 * 1024
        tar.addfile(info, io.BytesIO(os.urandom(info.size)))
    blob = gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)
    _replace_layer(layout, blob, raw.getvalue())


def _replace_layer(layout: Path, blob: bytes, tar: bytes) -> None:
    import hashlib
    import json

    from tests.images.registry import read_oci_image, write_oci_image

    manifest, _ = read_oci_image(layout)
    config_path = layout / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]
    config = json.loads(config_path.read_bytes())
    config["rootfs"]["diff_ids"] = [f"sha256:{hashlib.sha256(tar).hexdigest()}"]
    config_bytes = json.dumps(config).encode()
    config_digest = hashlib.sha256(config_bytes).hexdigest()
    (layout / "blobs" / "sha256" / config_digest).write_bytes(config_bytes)
    manifest["config"] = {
        **manifest["config"],
        "digest": f"sha256:{config_digest}",
        "size": len(config_bytes),
    }
    descriptor = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": f"sha256:{hashlib.sha256(blob).hexdigest()}",
        "size": len(blob),
    }
    write_oci_image(layout, layout, manifest, [(descriptor, blob)], "latest")


async def pull(size_mib: int, repeat: int) -> None:
    import aiohttp

    from tests.images.cdh_support import World, cdh
    from tests.images.cdh_support import pull as cdh_pull
    from tests.images.gocrypt import PROVIDER_NAME, encrypt_oci_image, provider_config
    from tests.images.registry import running_registry, skopeo
    from tests.kbs.support import start_kbs

    with tempfile.TemporaryDirectory(prefix="bench-image-pull-") as scratch:
        tmp = Path(scratch)
        kbs = await start_kbs(tmp)
        try:
            async with aiohttp.ClientSession() as http:
                await kbs.set_policies(http)
            _big_image(tmp / "plain", size_mib)
            kek = tmp / "kek"
            key = f"provider:{PROVIDER_NAME}:keypath={kek}::keyid=kbs:///default/key/bench"
            await encrypt_oci_image(tmp / "plain", tmp / "enc", key, provider_config(tmp / "oc.json"))
            async with aiohttp.ClientSession() as http:
                await kbs.put_resource(http, "default/key/bench", kek.read_bytes())
            with running_registry(tmp) as registry:
                for layout, tag in (("enc", "enc"), ("plain", "plain")):
                    pushed = skopeo(
                        "copy",
                        "--dest-tls-verify=false",
                        f"oci:{tmp / layout}:latest",
                        f"docker://{registry}/bench/app:{tag}",
                    )
                    assert pushed.returncode == 0, pushed.stderr
                world = World(
                    tmp,
                    kbs,
                    registry,
                    kek.read_bytes(),
                    f"{registry}/bench/app:enc",
                    f"{registry}/bench/app:plain",
                )
                names = ("CDH PullImage (encrypted)", "skopeo copy (encrypted)", "skopeo copy (plain)")
                timings: dict[str, list[float]] = {name: [] for name in names}
                cpu_used: dict[str, list[float]] = {name: [] for name in names}
                for attempt in range(repeat):
                    async with cdh(world) as client:  # a fresh CDH each time: attestation included
                        start, cpu = time.perf_counter(), time.process_time()
                        await cdh_pull(client, world.image, tmp / f"bundle{attempt}")
                        timings["CDH PullImage (encrypted)"].append(time.perf_counter() - start)
                        cpu_used["CDH PullImage (encrypted)"].append(time.process_time() - cpu)
                    await asyncio.to_thread(shutil.rmtree, tmp / f"bundle{attempt}")
                    for tag in ("enc", "plain"):
                        start, cpu = time.perf_counter(), _children_cpu()
                        copied = skopeo(
                            "copy",
                            "--src-tls-verify=false",
                            f"docker://{registry}/bench/app:{tag}",
                            f"oci:{tmp / 'copy'}:x",
                        )
                        name = f"skopeo copy ({'encrypted' if tag == 'enc' else 'plain'})"
                        timings[name].append(time.perf_counter() - start)
                        cpu_used[name].append(_children_cpu() - cpu)
                        assert copied.returncode == 0, copied.stderr
                        await asyncio.to_thread(shutil.rmtree, tmp / "copy")
        finally:
            await kbs.runner.cleanup()
    print(f"\npull of a {size_mib} MiB image from a local docker-registry (median of {repeat})")
    print("CPU: the bench process for the CDH (with its in-process KBS), the skopeo process for skopeo")
    for name, samples in timings.items():
        median = statistics.median(samples)
        cpu = statistics.median(cpu_used[name])
        print(
            f"{name:>28}: {median:6.2f} s wall ({size_mib * 1.048576 / median:4.0f} MB/s), {cpu:5.2f} s CPU"
        )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes-mib", default="256,1024", help="layer sizes for the decryption figures")
    parser.add_argument("--pull-mib", type=int, default=200, help="image size for the pull figures (0: skip)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    decryption([int(size) for size in args.sizes_mib.split(",")], args.repeat)
    if args.pull_mib:
        asyncio.run(pull(args.pull_mib, args.repeat))


if __name__ == "__main__":
    main()
