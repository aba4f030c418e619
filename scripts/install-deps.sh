#!/usr/bin/env bash
# Installs the Debian packages Fathom builds against (liburing, libnvme's headers, ISA-L,
# OpenSSL's libcrypto for SHA-256) and the dataset image tools (erofs-utils, e2fsprogs)
# and, with --e2e, what the kernel end-to-end test needs. Safe to run again: it installs
# only what is missing, and refreshes the package lists only when something is.
set -euo pipefail
packages=(liburing-dev libnvme-dev libisal-dev libssl-dev erofs-utils e2fsprogs)
if [[ ${1:-} == --bench ]]; then
    packages+=(fio)   # the file namespace's baseline in scripts/benchmark.sh
fi
if [[ ${1:-} == --e2e ]]; then
    packages+=(qemu-system-x86 linux-image-amd64 busybox-static nvme-cli fio cpio kmod xz-utils binutils e2fsprogs)
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
((${#missing[@]})) || exit 0
echo "[install-deps] installing: ${missing[*]}" >&2
sudo=()
[[ $(id -u) == 0 ]] || sudo=(sudo)
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}"
