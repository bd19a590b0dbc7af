"""A rendered pod's container run on this machine as a kubelet would start it (no node here runs pods).

The container's command runs with its env (values, Secret and ConfigMap keys) and its volumes
(Secret, ConfigMap, projected; subPath mounts) written where it mounts them. The mount paths of
our charts are under /etc: the process gets a mount namespace of its own where /etc is an overlay
of the host's /etc and a directory holding those files, so the host's /etc is never written. The
same overlay carries /etc/hosts lines, for a Service name the command connects to. The image's
programs are this checkout's (the chart's image runs the peerpods package).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cluster.kubeapi import Json

OVERLAID = Path("/etc")
DEFAULT_MODE = 0o644
_MOUNT_AND_EXEC = (
    'mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1,workdir=$2" /etc; shift 2; exec "$@"'
)


def object_data(document: Json) -> dict[str, bytes]:
    """The keys of a Secret or ConfigMap as the files a volume of it holds."""
    data: dict[str, bytes] = {}
    if document["kind"] == "Secret":
        data.update((k, base64.b64decode(v)) for k, v in (document.get("data") or {}).items())
        data.update((k, v.encode()) for k, v in (document.get("stringData") or {}).items())
    else:
        data.update((k, v.encode()) for k, v in (document.get("data") or {}).items())
        data.update((k, base64.b64decode(v)) for k, v in (document.get("binaryData") or {}).items())
    return data


@dataclass
class Objects:
    """The Secrets and ConfigMaps a pod may refer to, by (kind, name)."""

    by_name: dict[tuple[str, str], dict[str, bytes]]

    @classmethod
    def of(cls, documents: list[Json]) -> Objects:
        return cls({
            (d["kind"], d["metadata"]["name"]): object_data(d)
            for d in documents if d["kind"] in ("Secret", "ConfigMap")
        })  # fmt: skip

    def keys(self, kind: str, name: str) -> dict[str, bytes]:
        try:
            return self.by_name[(kind, name)]
        except KeyError:
            raise AssertionError(f"the pod refers to {kind} {name}, which is not there") from None

    def key(self, kind: str, name: str, key: str) -> bytes:
        keys = self.keys(kind, name)
        assert key in keys, f"{kind} {name} has no key {key!r}"
        return keys[key]

    def volume(self, volume: Json) -> dict[str, tuple[bytes, int]]:
        """relative path -> (content, mode) of a Secret, ConfigMap or projected volume."""
        if "projected" in volume:
            mode = volume["projected"].get("defaultMode", DEFAULT_MODE)
            files: dict[str, tuple[bytes, int]] = {}
            for source in volume["projected"]["sources"]:
                files.update(self._source(source, mode))
            return files
        return self._source(volume, None)

    def _source(self, source: Json, projected_mode: int | None) -> dict[str, tuple[bytes, int]]:
        if "secret" in source:
            spec, keys = source["secret"], self.keys("Secret", source["secret"].get("secretName") or
                                                     source["secret"]["name"])  # fmt: skip
        elif "configMap" in source:
            spec, keys = source["configMap"], self.keys("ConfigMap", source["configMap"]["name"])
        else:
            raise AssertionError(f"volume kind not supported here: {sorted(source)}")
        mode = spec.get("defaultMode", projected_mode if projected_mode is not None else DEFAULT_MODE)
        if "items" not in spec:
            return {key: (content, mode) for key, content in keys.items()}
        files = {}
        for item in spec["items"]:
            assert item["key"] in keys, f"no key {item['key']!r} for volume item {item['path']}"
            files[item["path"]] = (keys[item["key"]], item.get("mode", mode))
        return files


def container_env(container: Json, objects: Objects) -> dict[str, str]:
    env = {}
    for variable in container.get("env") or []:
        source = variable.get("valueFrom")
        if source is None:
            env[variable["name"]] = variable.get("value", "")
        elif "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[variable["name"]] = objects.key("Secret", ref["name"], ref["key"]).decode()
        else:
            ref = source["configMapKeyRef"]
            env[variable["name"]] = objects.key("ConfigMap", ref["name"], ref["key"]).decode()
    return env


def container_files(pod_spec: Json, container: Json, objects: Objects) -> dict[Path, tuple[bytes, int]]:
    """Absolute path -> (content, mode) of every file the container's volume mounts show."""
    volumes = {volume["name"]: volume for volume in pod_spec.get("volumes") or []}
    files = {}
    for mount in container.get("volumeMounts") or []:
        shown = objects.volume(volumes[mount["name"]])
        target = Path(mount["mountPath"])
        if "subPath" in mount:
            files[target] = shown[mount["subPath"]]
        else:
            files.update((target / relative, entry) for relative, entry in shown.items())
    return files


@dataclass
class Container:
    """One container of a rendered pod template, ready to run here."""

    command: list[str]
    env: dict[str, str]
    files: dict[Path, tuple[bytes, int]]

    @classmethod
    def of(cls, pod_spec: Json, objects: Objects, name: str | None = None) -> Container:
        container = next(c for c in pod_spec["containers"] if name in (None, c["name"]))
        return cls(
            [*container.get("command", []), *container.get("args", [])],
            container_env(container, objects),
            container_files(pod_spec, container, objects),
        )

    def argv(self, directory: Path, hosts: dict[str, str]) -> list[str]:
        """The command line that runs the container's command in its own mount namespace; `directory`
        receives the overlay's upper and work directories."""
        upper, work = directory / "upper", directory / "work"
        upper.mkdir(parents=True)
        work.mkdir()
        for path, (content, mode) in self.files.items():
            assert OVERLAID in path.parents, f"mount path {path} is outside {OVERLAID}"
            place = upper / path.relative_to(OVERLAID)
            place.parent.mkdir(parents=True, exist_ok=True)
            place.write_bytes(content)
            place.chmod(mode)
        if hosts:
            lines = "".join(f"{address} {name}\n" for name, address in hosts.items())
            (upper / "hosts").write_text((OVERLAID / "hosts").read_text() + lines)
        shell = ["sh", "-ec", _MOUNT_AND_EXEC, "sh", str(upper), str(work)]
        return ["unshare", "--mount", "--propagation", "private", *shell, *self.command]

    def environment(self) -> dict[str, str]:
        """The container's env over a minimal base; PATH finds this checkout's programs first."""
        path = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
        return {"PATH": path, "HOME": os.environ.get("HOME", "/root"), **self.env}

    def run(self, directory: Path, hosts: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(directory, hosts), env=self.environment(), capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip

    def start(self, directory: Path, hosts: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(
                self.argv(directory, hosts), env=self.environment(), stdout=out, stderr=subprocess.STDOUT
            )
