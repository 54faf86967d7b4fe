#!/usr/bin/env bash
# Installs what slurm-gpu needs on a Debian 12 machine (run as root): Slurm 22.05 and munge from Debian,
# Lua for job_submit.lua, Prometheus and promtool for the monitoring tests (the tests start their own
# instance; the package's service is not started), debootstrap for the Debian roots of other Slurm versions,
# containers and install tests (slurm_gpu.testbed.roots), Ansible for the role's tests (Debian's: it carries
# the community.general chroot connection), docker.io and docker-compose for docker-slurm/ and its tests,
# and a virtual environment in .venv with the package and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    python3 python3-venv python3-dev
    munge slurmctld slurmd slurm-client slurm-wlm-basic-plugins
    # the local cluster's accounting (tests/cluster/test_cluster_accounting.py): its own MariaDB, a real slurmdbd
    slurmdbd mariadb-server
    lua5.1
    prometheus
    iproute2 procps util-linux
    debootstrap
    ansible
    docker.io docker-compose
    # containers on the job's MIG instance (tests/containers): rootless podman, dockerd, a busybox image
    podman uidmap busybox-static
)

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs Debian packages and starts Slurm daemons)" >&2
    exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # No package may start its service here (docker.io would start a dockerd that rewires the host's
    # network): the tests start their own daemons.
    policy_rc=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        policy_rc=/usr/sbin/policy-rc.d
    fi
    apt-get install -y -q --no-install-recommends "${missing[@]}"
    [ -z "$policy_rc" ] || rm -f "$policy_rc"
    # Debian enables the prometheus service on install; the tests start their own on a free port.
    if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
    # Likewise docker's: the docker-slurm/ tests start a dockerd of their own (no bridge, no iptables).
    if [[ " ${missing[*]} " == *" docker.io "* ]] && command -v systemctl >/dev/null; then
        systemctl disable --now docker.service docker.socket >/dev/null 2>&1 || true
    fi
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# pip's build backend is chatty; keep its output for when it fails.
if ! .venv/bin/python -m pip install -q -e '.[dev,plot,examples]' >.venv/pip-install.log 2>&1; then
    cat .venv/pip-install.log >&2
    exit 1
fi
echo "setup.sh: ready (.venv/bin/slurm-gpu)"
