# SPDX-License-Identifier: Apache-2.0
"""deploy/kubernetes validates against the Kubernetes OpenAPI schema (strict:
unknown fields are errors), and asks for what the agent needs and no more."""
from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from guard.policy.load import parse_policy
from tests.conftest import ROOT

MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
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
