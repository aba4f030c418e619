#!/bin/sh
# /init of the e2e guest (busybox sh, PID 1). Installed by build-initramfs.sh.
# Brings the guest to "network + nvme-tcp modules ready", runs /test.sh (added
# per run by run-guest.sh), reports "E2E_EXIT=<rc>" on the second serial port
# (/dev/ttyS1 -> RESULT_FILE on the host) and powers off. If anything here
# dies, the kernel panics and QEMU (-no-reboot) exits, so the host never hangs
# longer than its timeout.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root TERM=dumb

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp && mount -t tmpfs tmpfs /run && mount -t tmpfs tmpfs /dev/shm
dmesg -n 7   # boot ran with "quiet"; from now on show nvme/net messages
echo "[init] started at $(cut -d' ' -f1 /proc/uptime)s, kernel $(uname -r)"

# Result channel: raw mode so the host sees exactly the bytes we write.
RESULT_DEV=/dev/ttyS1
stty -F "$RESULT_DEV" raw -echo 115200 2>/dev/null || true
export RESULT_DEV
result() { echo "$*" > "$RESULT_DEV"; }

# Kernel modules, in the dependency order computed on the host. "File exists"
# (already loaded / built in) is fine; anything else is reported.
echo /bin/modprobe > /proc/sys/kernel/modprobe
KVER=$(uname -r)
while read -r m; do
    [ -n "$m" ] || continue
    out=$(insmod "/lib/modules/$KVER/$m" 2>&1) || case $out in
        *"File exists"*) ;;
        *) echo "[init] insmod $m failed: $out" ;;
    esac
done < /etc/modules.order
echo "[init] modules loaded at $(cut -d' ' -f1 /proc/uptime)s"
grep -q configfs /proc/filesystems && mount -t configfs configfs /sys/kernel/config
[ -c /dev/nvme-fabrics ] && echo "[init] /dev/nvme-fabrics present" \
                         || echo "[init] WARNING: /dev/nvme-fabrics missing"

# Network: QEMU user netdev (slirp) is fixed 10.0.2.0/24 with the host at
# 10.0.2.2, so static config avoids a DHCP round trip.
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "nameserver 10.0.2.3" > /etc/resolv.conf
echo "[init] ready at $(cut -d' ' -f1 /proc/uptime)s"
result "E2E_READY uptime=$(cut -d' ' -f1 /proc/uptime)"

rc=127
if [ -f /test.sh ]; then
    echo "[init] ===== running /test.sh ====="
    sh /test.sh
    rc=$?
    echo "[init] ===== /test.sh exited with $rc ====="
else
    echo "[init] no /test.sh in initramfs"
fi
result "E2E_EXIT=$rc"
sync
poweroff -f
sleep 5
exit "$rc"   # poweroff failed: PID 1 exit -> panic -> QEMU -no-reboot exits
