#!/bin/sh
# Prelude for guest-tests.sh in kernel-e2e.sh --selftest: configures the Linux
# kernel NVMe/TCP target (nvmet) inside the guest on 127.0.0.1:$TARGET_PORT,
# so the whole initiator test can be validated without fathomd. The namespace
# is a sparse file in tmpfs; tmpfs has no O_DIRECT, hence buffered_io=1.
set -u
TARGET_PORT=${TARGET_PORT:-4420}
SUBNQN=${SUBNQN:-nqn.2026-11.io.fathom:e2e}
modprobe nvmet-tcp || { echo "FAIL: modprobe nvmet-tcp"; exit 1; }
C=/sys/kernel/config/nvmet
truncate -s 256M /tmp/ns1.img
mkdir "$C/subsystems/$SUBNQN"
echo 1 > "$C/subsystems/$SUBNQN/attr_allow_any_host"
mkdir "$C/subsystems/$SUBNQN/namespaces/1"
echo /tmp/ns1.img > "$C/subsystems/$SUBNQN/namespaces/1/device_path"
echo 1 > "$C/subsystems/$SUBNQN/namespaces/1/buffered_io"
echo 1 > "$C/subsystems/$SUBNQN/namespaces/1/enable"
mkdir "$C/ports/1"
echo ipv4 > "$C/ports/1/addr_adrfam"; echo tcp > "$C/ports/1/addr_trtype"
echo 127.0.0.1 > "$C/ports/1/addr_traddr"; echo "$TARGET_PORT" > "$C/ports/1/addr_trsvcid"
ln -s "$C/subsystems/$SUBNQN" "$C/ports/1/subsystems/$SUBNQN"
echo "INFO: in-guest nvmet target on 127.0.0.1:$TARGET_PORT ($SUBNQN)"
# shellcheck disable=SC2034  # read by guest-tests.sh, concatenated after this
TARGET_ADDR=127.0.0.1
