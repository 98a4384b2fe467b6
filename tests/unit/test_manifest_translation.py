# SPDX-License-Identifier: Apache-2.0
"""tests/kernel/manifest.py, the DaemonSet -> `podman run` translation that
tests/kernel/test_manifest.py runs: every key of the manifest is translated
or refused by name, so a change to either side breaks the test."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from tests.kernel.manifest import (ConfigMapDir, ManifestError, configmap_data, load_daemonset,
                                   translate)

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


@pytest.fixture
def daemonset():
    return load_daemonset(KUBERNETES / "daemonset.yaml")


def container_of(daemonset):
    return daemonset["spec"]["template"]["spec"]["containers"][0]


def translated(daemonset, tmp_path):
    replaced = {"/sys/fs/bpf": tmp_path / "bpf", "/run/egress-guard": tmp_path / "state",
                "/var/log/egress-guard": tmp_path / "events"}
    return translate(daemonset, replaced, {"egress-guard-policy": tmp_path / "policy"},
                     node_name="node-1")


def pairs(options: list[str], flag: str) -> list[str]:
    return [options[i + 1] for i, o in enumerate(options) if o == flag]


def test_the_daemonset_becomes_the_podman_options_it_says(daemonset, tmp_path):
    pod = translated(daemonset, tmp_path)
    container = container_of(daemonset)
    context = container["securityContext"]
    assert pod.args == container["args"]
    assert pairs(pod.options, "--pid") == ["host"]              # hostPID
    assert "--network" not in pod.options and not pod.host_network
    assert pairs(pod.options, "--cap-drop") == context["capabilities"]["drop"]
    assert pairs(pod.options, "--cap-add") == context["capabilities"]["add"]
    # the drops come first: what is added is what the agent has
    assert pod.options.index("--cap-drop") < pod.options.index("--cap-add")
    assert "--read-only" in pod.options and "--read-only-tmpfs=false" in pod.options
    assert "no-new-privileges" in pairs(pod.options, "--security-opt")
    assert "seccomp=unconfined" in pairs(pod.options, "--security-opt")   # no seccompProfile
    assert pairs(pod.options, "-e") == ["NODE_NAME=node-1"]
    assert pairs(pod.options, "--memory") == [str(512 << 20)]
    assert pairs(pod.options, "--cpus") == ["1.0"]
    assert pairs(pod.options, "--stop-timeout") == ["30"] and pod.grace_s == 30
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert set(pod.mounts) == set(mounts)
    for volume in pairs(pod.options, "-v"):
        host, path, *ro = volume.split(":")
        assert pod.mounts[path] == host and bool(ro) == bool(mounts[path].get("readOnly"))
    assert pod.mounts["/sys/fs/bpf"] == str(tmp_path / "bpf")       # replaced, and made
    assert (tmp_path / "bpf").is_dir()
    assert pod.mounts["/sys/kernel/btf"] == "/sys/kernel/btf"       # the host's own
    assert pod.mounts["/etc/egress-guard"] == str(tmp_path / "policy")
    assert pod.probes == {"liveness": ("/healthz", 9464), "readiness": ("/readyz", 9464)}
    argv = pod.run_argv("img", "eg-x")
    assert argv[:2] == ["podman", "run"] and argv[argv.index("img") + 1:] == pod.args
    once = pod.run_argv("img", "eg-y", args=["uninstall"], once=True)
    assert "--rm" in once and "-d" not in once and once[-1] == "uninstall"


@pytest.mark.parametrize("where, key, place", [
    (lambda d: d["spec"]["template"]["spec"], "shareProcessNamespace",
     "spec.template.spec.shareProcessNamespace"),
    (container_of, "workingDir", "spec.template.spec.containers[0].workingDir"),
    (lambda d: container_of(d)["securityContext"], "runAsUser",
     "spec.template.spec.containers[0].securityContext.runAsUser"),
    (lambda d: container_of(d)["resources"]["limits"], "hugepages-2Mi",
     "spec.template.spec.containers[0].resources.limits.hugepages-2Mi"),
])
def test_a_key_it_does_not_translate_is_an_error_naming_its_place(daemonset, tmp_path, where,
                                                                   key, place):
    changed = copy.deepcopy(daemonset)
    where(changed)[key] = 1
    with pytest.raises(ManifestError, match=place.replace(".", r"\.").replace("[", r"\[")):
        translated(changed, tmp_path)


def test_env_other_than_a_value_or_the_node_name_is_refused(daemonset, tmp_path):
    changed = copy.deepcopy(daemonset)
    container_of(changed)["env"].append(
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    with pytest.raises(ManifestError, match=r"containers\[0\]\.env\[1\]"):
        translated(changed, tmp_path)


def test_host_network_and_a_command_are_translated(daemonset, tmp_path):
    changed = copy.deepcopy(daemonset)
    changed["spec"]["template"]["spec"]["hostNetwork"] = True
    container_of(changed)["command"] = ["/opt/egress-guard/bin/egress-guard"]
    pod = translated(changed, tmp_path)
    assert pairs(pod.options, "--network") == ["host"] and pod.host_network
    assert pairs(pod.options, "--entrypoint") == ['["/opt/egress-guard/bin/egress-guard"]']


def test_the_configmap_the_daemonset_mounts_holds_a_policy(daemonset):
    volume = next(v for v in daemonset["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    data = configmap_data(KUBERNETES / "configmap.yaml", volume["configMap"]["name"])
    assert yaml.safe_load(data["policy.yaml"])["kind"] == "EgressPolicy"


def test_a_configmap_update_swaps_the_files_at_once_as_the_kubelet_does(tmp_path):
    cm = ConfigMapDir(tmp_path / "cm")
    cm.write({"policy.yaml": "one"})
    first = os.stat(tmp_path / "cm" / "policy.yaml").st_ino
    assert (tmp_path / "cm" / "policy.yaml").is_symlink()
    cm.write({"policy.yaml": "two"})
    assert (tmp_path / "cm" / "policy.yaml").read_text() == "two"
    # the agent notices a new inode (guard/agent/reloads.py file_state)
    assert os.stat(tmp_path / "cm" / "policy.yaml").st_ino != first
    versions = [p.name for p in (tmp_path / "cm").iterdir() if p.name.startswith("..2")]
    assert len(versions) == 1   # the old version is gone
