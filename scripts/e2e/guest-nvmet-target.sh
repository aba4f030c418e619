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
# nsid 2 stands in for fathomd's loop-device namespace (test_io_cmds rawblock).
truncate -s 64M /tmp/ns2.img
mkdir "$C/subsystems/$SUBNQN/namespaces/2"
echo /tmp/ns2.img > "$C/subsystems/$SUBNQN/namespaces/2/device_path"
echo 1 > "$C/subsystems/$SUBNQN/namespaces/2/buffered_io"
echo 1 > "$C/subsystems/$SUBNQN/namespaces/2/enable"
mkdir "$C/ports/1"
echo ipv4 > "$C/ports/1/addr_adrfam"; echo tcp > "$C/ports/1/addr_trtype"
echo 127.0.0.1 > "$C/ports/1/addr_traddr"; echo "$TARGET_PORT" > "$C/ports/1/addr_trsvcid"
ln -s "$C/subsystems/$SUBNQN" "$C/ports/1/subsystems/$SUBNQN"
echo "INFO: in-guest nvmet target on 127.0.0.1:$TARGET_PORT ($SUBNQN)"
# shellcheck disable=SC2034  # read by guest-tests.sh, concatenated after this
TARGET_ADDR=127.0.0.1

# Hot-plug actions of guest-hotplug.sh, done on nvmet via configfs instead of
# by the host; nvmet sends the Namespace Attribute Changed AEN itself.
HOTPLUG_LOCAL=1
NVMET_NS=$C/subsystems/$SUBNQN/namespaces
hotplug_local() {  # $1 op; writes the ack the guest test polls for
    case $1 in
        add) truncate -s 32M /tmp/ns3.img && mkdir "$NVMET_NS/3" &&
             echo /tmp/ns3.img > "$NVMET_NS/3/device_path" && echo 1 > "$NVMET_NS/3/buffered_io" &&
             echo 1 > "$NVMET_NS/3/enable" ;;
        resize) # busybox truncate has no relative sizes (+64M)
                truncate -s $(($(stat -c %s /tmp/ns1.img) + 67108864)) /tmp/ns1.img &&
                echo 1 > "$NVMET_NS/1/revalidate_size" ;;
        remove) echo 0 > "$NVMET_NS/3/enable" && rmdir "$NVMET_NS/3" ;;
        *) false ;;
    esac && echo "ok nvmet configfs $1" > "/tmp/hotplug-ack-$1" \
         || echo "error nvmet configfs $1 failed" > "/tmp/hotplug-ack-$1"
}
