"""The Helm charts: helm lint and helm template with every provider values file, the rendered objects
applied to a real API server (server-side apply with strict schema validation) and read back."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
import yaml

from cluster import peerpod
from cluster.chartvalues import PROVIDERS, values_files
from cluster.kubeapi import Json, KubeClient
from kbs.config import parse_config
from tests.k8s.cluster import ROOT
from tests.k8s.objects import apply_all, documents

CHARTS = ROOT / "deploy/charts"
PEERPODS = CHARTS / "peerpods"
KBS = CHARTS / "kbs"
KBS_VALUES = ["--set", "storage.url=postgresql://kbs@db:5432/kbs", "--set", "admin.publicKey=PEM"]
# No cert-manager in the test cluster: its Issuer/Certificate kinds are checked in the rendering only.
NO_CERT_MANAGER = ["--set", "webhook.certManager.enabled=false", "--set", "webhook.caBundle=Y2E="]


def run_helm(helm: Path, *args: str) -> str:
    done = subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def render(
    helm: Path, chart: Path, *args: str, namespace: str = "confidential-containers-system"
) -> list[Json]:
    text = run_helm(
        helm, "template", "peerpods", str(chart), "--namespace", namespace, "--include-crds", *args
    )
    return documents(text)


def by_kind(objects: list[Json], kind: str) -> list[Json]:
    return [o for o in objects if o["kind"] == kind]


def test_provider_values_files_follow_the_settings() -> None:
    """The generated values files are up to date (python -m cluster.chartvalues rewrites them)."""
    for provider in PROVIDERS:
        values, secrets = values_files(provider)
        assert (PEERPODS / "providers" / f"{provider}.yaml").read_text() == values, provider
        assert (PEERPODS / "providers" / f"{provider}-secrets.yaml.template").read_text() == secrets, provider


@pytest.mark.parametrize("provider", PROVIDERS)
def test_lint_every_provider(helm: Path, provider: str) -> None:
    run_helm(helm, "lint", "--strict", str(PEERPODS), "-f", str(PEERPODS / "providers" / f"{provider}.yaml"))


def test_lint_kbs(helm: Path) -> None:
    run_helm(helm, "lint", "--strict", str(KBS), *KBS_VALUES)


def test_webhook_workers_value(helm: Path) -> None:
    def args(*values: str) -> list[str]:
        objects = render(helm, PEERPODS, "-f", str(PEERPODS / "providers/aws.yaml"), *values)
        webhook = next(d for d in by_kind(objects, "Deployment") if "webhook" in d["metadata"]["name"])
        return list(webhook["spec"]["template"]["spec"]["containers"][0]["args"])

    assert not any(a.startswith("--workers") for a in args())  # from the container's CPU limit
    assert "--workers=3" in args("--set", "webhook.workers=3")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_daemonset_as_upstream(helm: Path, provider: str) -> None:
    objects = render(helm, PEERPODS, "-f", str(PEERPODS / "providers" / f"{provider}.yaml"))
    (daemonset,) = by_kind(objects, "DaemonSet")
    spec = daemonset["spec"]
    assert spec["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = spec["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    (container,) = pod["containers"]
    assert container["command"] == ["cloud-api-adaptor", provider]
    assert container["securityContext"] == {"capabilities": {"add": ["NET_ADMIN", "SYS_ADMIN"]}}
    assert container["startupProbe"]["httpGet"] == {"host": "127.0.0.1", "path": "/startup", "port": 8000}
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in container["env"]}
    assert env["NODE_NAME"] == "spec.nodeName" and env["POD_UID"] == "metadata.uid"
    assert container["envFrom"] == [
        {"secretRef": {"name": "peer-pods-secret"}},
        {"configMapRef": {"name": "peer-pods-cm"}},
    ]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/run/netns"]["mountPropagation"] == "HostToContainer"
    assert {"/run/peerpod", "/run/xtables.lock", "/lib/modules", "/run/kata-containers/shared/direct-volumes",
            "/var/lib/peerpods"} <= mounts.keys()  # fmt: skip
    assert mounts["/lib/modules"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["xtables-lock"]["hostPath"] == {"path": "/run/xtables.lock", "type": "FileOrCreate"}
    assert ("ssh" in volumes) == (provider == "libvirt")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_peer_pods_cm_has_every_key_of_the_values_file(helm: Path, provider: str, tmp_path: Path) -> None:
    """Uncommenting every key of the provider file puts each into peer-pods-cm, as upstream's chart."""
    values = yaml.safe_load((PEERPODS / "providers" / f"{provider}.yaml").read_text())
    text = (PEERPODS / "providers" / f"{provider}.yaml").read_text()
    commented = [line[6:].split(":")[0] for line in text.splitlines() if line.startswith("    # ")]
    keys = [key for key in commented if key.isupper() and " " not in key]
    values["providerConfigs"][provider] = {
        **(values["providerConfigs"][provider] or {}),
        **dict.fromkeys(keys, "x"),
    }
    overrides = tmp_path / f"{provider}.yaml"
    overrides.write_text(yaml.safe_dump(values))
    objects = render(helm, PEERPODS, "-f", str(overrides))
    (config,) = by_kind(objects, "ConfigMap")
    assert config["metadata"]["name"] == "peer-pods-cm"
    assert set(keys) <= config["data"].keys()
    assert config["data"]["CLOUD_PROVIDER"] == provider
    assert all(isinstance(v, str) for v in config["data"].values())


def test_limit_and_tls_profile(helm: Path) -> None:
    objects = render(helm, PEERPODS, "-f", str(PEERPODS / "providers/aws.yaml"), "--set", "limit=0",
                     "--set", "tlsProfile.minVersion=VersionTLS13")  # fmt: skip
    data = by_kind(objects, "ConfigMap")[0]["data"]
    assert data["PEERPODS_LIMIT_PER_NODE"] == "0" and data["TLS_MIN_VERSION"] == "VersionTLS13"


def test_secret_create_and_reference_modes(helm: Path) -> None:
    created = render(helm, PEERPODS, "-f", str(PEERPODS / "providers/aws.yaml"),
                     "--set", "providerSecrets.aws.AWS_ACCESS_KEY_ID=AKID")  # fmt: skip
    (secret,) = by_kind(created, "Secret")
    assert secret["metadata"]["name"] == "peer-pods-secret" and secret["stringData"] == {
        "AWS_ACCESS_KEY_ID": "AKID"
    }
    reference = ["--set", "secrets.mode=reference", "--set", "secrets.existingSecretName=mine"]
    referenced = render(helm, PEERPODS, "-f", str(PEERPODS / "providers/aws.yaml"), *reference)
    assert not by_kind(referenced, "Secret")
    container = by_kind(referenced, "DaemonSet")[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"][0] == {"secretRef": {"name": "mine"}}
    done = subprocess.run([str(helm), "template", str(PEERPODS), "--set", "secrets.mode=reference"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode != 0 and "secrets.existingSecretName is required" in done.stderr


def test_runtime_class_webhook_and_crd(helm: Path) -> None:
    objects = render(helm, PEERPODS, "-f", str(PEERPODS / "providers/gcp.yaml"))
    (runtime_class,) = by_kind(objects, "RuntimeClass")
    assert runtime_class["metadata"]["name"] == runtime_class["handler"] == "kata-remote"
    assert runtime_class["overhead"] == {"podFixed": {"memory": "120Mi", "cpu": "250m"}}
    (hook_config,) = by_kind(objects, "MutatingWebhookConfiguration")
    (hook,) = hook_config["webhooks"]
    assert hook["name"] == "mwebhook.peerpods.io" and hook["failurePolicy"] == "Fail"
    assert hook["clientConfig"]["service"]["path"] == "/mutate-v1-pod"
    assert hook["rules"][0]["operations"] == ["CREATE"] and hook["reinvocationPolicy"] == "IfNeeded"
    assert {o["kind"] for o in objects} >= {"Issuer", "Certificate", "Deployment", "CustomResourceDefinition"}
    (crd,) = by_kind(objects, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == f"{peerpod.PLURAL}.{peerpod.GROUP}"
    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]["properties"]
    assert version["name"] == peerpod.VERSION and crd["spec"]["names"]["kind"] == peerpod.KIND
    assert schema["spec"]["properties"] == {
        "cloudProvider": {"type": "string"},
        "instanceID": {"type": "string"},
    }
    assert schema["status"]["properties"] == {"cleand": {"type": "boolean"}}
    controller = next(d for d in by_kind(objects, "Deployment") if "peerpodctrl" in d["metadata"]["name"])
    manager = controller["spec"]["template"]["spec"]["containers"][0]
    assert manager["command"] == ["peerpods-controller"] and "--leader-elect" in manager["args"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_rendered_objects_apply_to_the_api_server(
    helm: Path, kube: KubeClient, namespace: str, provider: str
) -> None:
    objects = render(helm, PEERPODS, "-f", str(PEERPODS / "providers" / f"{provider}.yaml"), *NO_CERT_MANAGER,
                     "--set", "webhook.namespaceOverride=", namespace=namespace)  # fmt: skip
    stored = await apply_all(kube, objects, namespace)
    try:
        kinds = {o["kind"] for o in stored}
        assert kinds >= {"DaemonSet", "ConfigMap", "Secret", "RuntimeClass", "ClusterRole", "Deployment",
                         "MutatingWebhookConfiguration", "CustomResourceDefinition", "Service"}  # fmt: skip
        daemonset = next(o for o in stored if o["kind"] == "DaemonSet")
        mounts = daemonset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        assert (
            next(m for m in mounts if m["mountPath"] == "/run/netns")["mountPropagation"] == "HostToContainer"
        )
        hook = next(o for o in stored if o["kind"] == "MutatingWebhookConfiguration")
        assert hook["webhooks"][0]["clientConfig"]["caBundle"] == base64.b64encode(b"ca").decode()
    finally:
        # The chart's webhook would send every new pod to a Service with no endpoints.
        await kube.delete("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/"
                          "peer-pods-webhook-mutating-webhook-configuration")  # fmt: skip


async def test_kbs_chart_applies(helm: Path, kube: KubeClient, namespace: str) -> None:
    objects = render(helm, KBS, *KBS_VALUES, "--set", "replicas=3", namespace=namespace)
    stored = await apply_all(kube, objects, namespace)
    deployment = next(o for o in stored if o["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 3
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["env"][0]["name"] == "POSTGRES_URL"
    config = next(o for o in stored if o["kind"] == "ConfigMap")["data"]["kbs-config.toml"]
    parsed = parse_config(config, "kbs-config.toml")  # the KBS accepts what the chart renders
    assert parsed.storage.type == "Postgres" and parsed.storage.shared and parsed.http.insecure_http
    signer = next(
        o for o in stored if o["kind"] == "Secret" and o["metadata"]["name"].endswith("token-signer")
    )
    assert b"PRIVATE KEY" in base64.b64decode(signer["data"]["token.key"])


def test_kbs_memory_storage_is_one_process_only(helm: Path) -> None:
    values = ["--set", "storage.type=Memory", "--set", "replicas=2", "--set", "admin.publicKey=PEM"]
    done = subprocess.run(
        [str(helm), "template", str(KBS), *values], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0 and "replicas and workers must be 1" in done.stderr
