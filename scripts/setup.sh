#!/usr/bin/env bash
# One-time (and idempotent) setup of a Debian 12 machine for labvirt: system packages,
# the .venv with labvirt installed editable, and a running libvirtd (no systemd needed).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libvirt-daemon-system libvirt-clients libvirt-dev pkg-config gcc
              qemu-system-x86 qemu-utils ovmf libxml2-utils dpkg-dev openssh-client
              libarchive-tools  # bsdtar: the consumer tier reads seed ISOs with it
              # the real-image system test builds a Debian 12 image (tests/system/debian_image.py)
              mmdebstrap fdisk dosfstools mtools e2fsprogs)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# `apt-get download` (used to build the tiny image) needs package lists too
if [ ${#missing[@]} -gt 0 ] || ! ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1; then
  echo "setup: apt-get update"
  as_root apt-get update -q >/dev/null
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.labvirt-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing labvirt into .venv"
  .venv/bin/pip install -q --upgrade pip 2>&1 | grep -v '^WARNING' || true
  .venv/bin/pip install -q -e '.[test]' 2>&1 | grep -v '^WARNING' || true
  .venv/bin/python -c 'import labvirt, libvirt, paramiko' 
  touch "$stamp"
fi

# libvirtd: start it when it does not answer (no systemd on these machines)
if ! virsh -c qemu:///system version >/dev/null 2>&1; then
  echo "setup: starting virtlogd and libvirtd"
  pgrep -x virtlogd >/dev/null || as_root virtlogd -d
  pgrep -x libvirtd >/dev/null || as_root libvirtd -d
  for _ in $(seq 1 50); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
  done
  virsh -c qemu:///system version >/dev/null 2>&1 || { echo "setup: libvirtd did not answer" >&2; exit 1; }
fi
# real cloud-init versions for the consumer tier (Debian packages, cached by version)
.venv/bin/python tests/consumer/cloudinit_env.py | sed 's/^/setup: /' \
  || echo "setup: warning: some cloud-init versions could not be fetched" >&2
# TripleO's own code for the consumer tier: pinned wheels and sdist, downloaded, not installed
bash tests/consumer/fetch-tripleo.sh .venv/tripleo-dist
echo "setup: ready"
