#!/usr/bin/env bash
# run-guest.sh OUTDIR GUEST_SCRIPT RESULT_FILE
#
# Boots the e2e guest built by build-initramfs.sh with GUEST_SCRIPT as /test.sh
# and exits with that script's exit status, as reported by the guest's /init on
# the second serial port (ttyS1 -> RESULT_FILE). No status line -> exit 1
# (or 124 if the timeout fired).
#
# Environment knobs:
#   E2E_TIMEOUT      seconds before QEMU is killed           (default 900)
#   E2E_CONSOLE_LOG  guest console (ttyS0) log   (default RESULT_FILE.console.log)
#   E2E_STREAM       1 = also stream the console to stdout   (default 1)
#   E2E_KERNEL       force a kernel image (default OUTDIR/vmlinux, else bzImage)
#   E2E_APPEND       extra kernel command line
set -euo pipefail

OUTDIR=${1:?usage: run-guest.sh OUTDIR GUEST_SCRIPT RESULT_FILE}
GUEST_SCRIPT=${2:?usage: run-guest.sh OUTDIR GUEST_SCRIPT RESULT_FILE}
RESULT_FILE=${3:?usage: run-guest.sh OUTDIR GUEST_SCRIPT RESULT_FILE}
TIMEOUT=${E2E_TIMEOUT:-900}
CONSOLE_LOG=${E2E_CONSOLE_LOG:-$RESULT_FILE.console.log}
STREAM=${E2E_STREAM:-1}
log() { echo "[run-guest] $*" >&2; }

for f in "$OUTDIR/initramfs.cpio" "$OUTDIR/initramfs.cpio.gz"; do
    [[ -f $f ]] && { BASE_INITRD=$f; break; }
done
[[ -n ${BASE_INITRD:-} ]] || { log "no initramfs in $OUTDIR (run build-initramfs.sh)"; exit 1; }
[[ -f $GUEST_SCRIPT ]] || { log "no guest script $GUEST_SCRIPT"; exit 1; }
command -v qemu-system-x86_64 >/dev/null || { log "qemu-system-x86_64 missing"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fathom-guest.XXXXXX")
QPID=; TPID=
cleanup() {
    if [[ -n $QPID ]]; then kill "$QPID" 2>/dev/null || true; fi
    if [[ -n $TPID ]]; then kill "$TPID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
# Without these, a SIGTERM/SIGINT while in "wait" kills bash without running
# the EXIT trap, leaving QEMU running until its timeout.
trap 'exit 143' TERM; trap 'exit 130' INT

# Per-run initrd = base archive + a second (uncompressed) cpio holding /test.sh.
# The kernel unpacks concatenated archives in order, whatever their compression.
mkdir -p "$WORK/extra"
install -m 0755 "$GUEST_SCRIPT" "$WORK/extra/test.sh"
(cd "$WORK/extra" && echo test.sh | cpio -o -H newc --quiet -R 0:0) > "$WORK/extra.cpio"
cat "$BASE_INITRD" "$WORK/extra.cpio" > "$WORK/initrd"

if [[ -n ${E2E_KERNEL:-} ]]; then KERNELS=("$E2E_KERNEL")
else
    KERNELS=()
    [[ -f $OUTDIR/vmlinux ]] && KERNELS+=("$OUTDIR/vmlinux")  # PVH entry: fastest
    [[ -f $OUTDIR/bzImage ]] && KERNELS+=("$OUTDIR/bzImage")
fi
((${#KERNELS[@]})) || { log "no kernel image in $OUTDIR"; exit 1; }

# quiet: fewer printk bytes through the emulated UART during boot (/init raises
# the console loglevel afterwards so nvme messages show). mitigations=off:
# speculative-execution workarounds only cost time under TCG.
APPEND="console=ttyS0 panic=-1 rdinit=/init mitigations=off quiet ${E2E_APPEND:-}"

boot() {  # $1 = kernel image; sets QEMU_RC
    local kernel=$1 start=$SECONDS waited=0
    : > "$CONSOLE_LOG"; : > "$RESULT_FILE"
    log "booting $(basename "$kernel") (timeout ${TIMEOUT}s); console log: $CONSOLE_LOG"
    # TCG only: KVM is not usable for a stock kernel on the CI machines.
    # user netdev: the guest reaches the host's 127.0.0.1:P as 10.0.2.2:P.
    # romfile=: skip loading the iPXE option ROM (we never netboot).
    timeout -k 10 "$TIMEOUT" qemu-system-x86_64 \
        -nodefaults -no-user-config -display none -no-reboot \
        -machine pc -accel tcg,thread=multi -cpu max -smp 2 -m 1024 \
        -kernel "$kernel" -initrd "$WORK/initrd" -append "$APPEND" \
        -chardev "file,id=con,path=$CONSOLE_LOG" -serial chardev:con \
        -chardev "file,id=res,path=$RESULT_FILE" -serial chardev:res \
        -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile= \
        </dev/null &
    QPID=$!
    if [[ $STREAM == 1 ]]; then
        tail -n +1 -F --pid="$QPID" "$CONSOLE_LOG" 2>/dev/null &
        TPID=$!
    fi
    # PVH boot failure shows up as no kernel output at all; detect it early
    # instead of waiting for the full timeout, so we can fall back to bzImage.
    while ! grep -q 'Linux version\|\[init\]' "$CONSOLE_LOG" 2>/dev/null; do
        if ! kill -0 "$QPID" 2>/dev/null || ((waited >= 60)); then break; fi
        sleep 1; waited=$((waited + 1))
    done
    if ! grep -q 'Linux version\|\[init\]' "$CONSOLE_LOG" 2>/dev/null; then
        log "no kernel output from $(basename "$kernel") after ${waited}s"
        kill "$QPID" 2>/dev/null || true
        wait "$QPID" 2>/dev/null || true
        QPID=; QEMU_RC=255; return
    fi
    QEMU_RC=0; wait "$QPID" || QEMU_RC=$?
    QPID=
    [[ -n $TPID ]] && { wait "$TPID" 2>/dev/null || true; TPID=; }
    log "qemu exited rc=$QEMU_RC after $((SECONDS - start))s"
}

for k in "${KERNELS[@]}"; do
    boot "$k"
    ((QEMU_RC == 255)) || break
done

# Status line written by /init; serial output may carry \r, strip it.
STATUS=$(tr -d '\r' < "$RESULT_FILE" | sed -n 's/^E2E_EXIT=\([0-9]\+\)$/\1/p' | tail -n1)
READY=$(tr -d '\r' < "$RESULT_FILE" | sed -n 's/^E2E_READY uptime=//p' | tail -n1)
[[ -n $READY ]] && log "guest ready (network + modules) at ${READY}s guest uptime"
if [[ -z $STATUS ]]; then
    if ((QEMU_RC == 124 || QEMU_RC == 137)); then log "TIMEOUT after ${TIMEOUT}s"; STATUS=124
    else log "guest wrote no exit status (qemu rc=$QEMU_RC)"; STATUS=1; fi
fi
if ((STATUS != 0)); then
    log "guest script FAILED (status $STATUS); console tail ($CONSOLE_LOG):"
    tail -n 60 "$CONSOLE_LOG" | tr -d '\r' | sed 's/^/  | /' >&2
else
    log "guest script passed"
fi
exit "$STATUS"
