#!/usr/bin/env bash
# Install what the single-node development SLURM cluster needs (launch/cluster/): SLURM, munge, slurmdbd and
# MariaDB from Debian's own packages; and g++ with Python's headers, with which DeepSpeed's CPU engine (the tests'
# strategy.cpu_rehearsal runs) compiles its shared-memory communication op on first use; and Fashion-MNIST
# (dataset-fashion-mnist: its IDX files under /usr/share/datasets/fashion-mnist/, read by data=fashion_mnist without
# network). Idempotent: when every binary and file is already there it does nothing at all,
# so CI and repeated runs pay no apt cost. Must run as root (or through sudo) on Debian/Ubuntu.
set -euo pipefail

PACKAGES=(slurm-wlm munge slurmdbd mariadb-server g++ python3-dev dataset-fashion-mnist)
# One binary per package; if all are on PATH (or in sbin) and Python.h exists the install is already complete.
BINARIES=(slurmctld slurmd munged slurmdbd mariadbd g++)
PYTHON_HEADER="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h"
# dataset-fashion-mnist installs no binary: its first file stands for it
FASHION_MNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

have_all() {
    local bin
    for bin in "${BINARIES[@]}"; do
        command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || return 1
    done
    [ -f "$PYTHON_HEADER" ] && [ -f "$FASHION_MNIST" ]
}

if have_all; then
    echo "system packages for the tests (SLURM dev cluster, g++, Python headers, Fashion-MNIST) already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install.sh: must run as root (or have sudo)" >&2; exit 1; }
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
# policy-rc.d exit 101 stops the maintainer scripts from starting system-wide munge/mariadb/slurm services:
# the dev cluster runs its own private daemons and a system mariadb would only compete for CPU and ports.
# Only created when absent, and removed afterwards, so an administrator's own policy is never touched.
POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=0
if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    CREATED_POLICY=1
fi
remove_policy() {
    if [ "$CREATED_POLICY" = 1 ]; then $SUDO rm -f "$POLICY"; fi
}
trap remove_policy EXIT

$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
have_all || { echo "install.sh: packages installed but one is still missing: ${BINARIES[*]} $PYTHON_HEADER $FASHION_MNIST" >&2; exit 1; }
echo "system packages for the tests installed"
