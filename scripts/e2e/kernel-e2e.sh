#!/usr/bin/env bash
# kernel-e2e.sh [--fathomd PATH] [--selftest] [--keep]
#
# End-to-end test of fathomd against the real Linux NVMe/TCP initiator, which
# runs in a QEMU/TCG guest (the host kernel has no nvme modules):
#   1. installs missing Debian packages (qemu, kernel image, nvme-cli, fio, ...)
#   2. builds the guest kernel + initramfs into <repo>/.build-e2e (cached)
#   3. creates a 256 MiB sparse backing file and an nvmetcli-style JSON config
#   4. starts `fathomd --config CONFIG` on a free 127.0.0.1 port
#   5. boots the guest with guest-tests.sh (guest sees the host as 10.0.2.2)
#   6. SIGTERMs fathomd, which must exit 0 within 10 s
# Exit status is non-zero if any step or guest check failed.
#
# --selftest  validate the harness itself without fathomd: guest-smoke.sh
#             (tools, modules, host reachability, closed-port discover) and
#             guest-tests.sh against the Linux nvmet target inside the guest.
# --keep      keep the temp dir (backing file, config) for inspection.
# Logs of the last run: <repo>/.build-e2e/last-run/ (console, fathomd, results).
# Env: E2E_OUT (artifact dir), E2E_TIMEOUT (guest timeout, s), FIO_* (sizes).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$HERE/../.." && pwd))
FATHOMD=$REPO/.build/release/fathomd
MODE=fathom KEEP=0
while (($#)); do
    case $1 in
        --fathomd) FATHOMD=${2:?--fathomd needs a path}; shift 2 ;;
        --fathomd=*) FATHOMD=${1#*=}; shift ;;
        --selftest) MODE=selftest; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
E2E_OUT=${E2E_OUT:-$REPO/.build-e2e}
RUN_DIR=$E2E_OUT/last-run
SUBNQN=nqn.2026-11.io.fathom:e2e
log() { echo "[kernel-e2e] $*" >&2; }
T_START=$SECONDS
if [[ $MODE == fathom && ! -x $FATHOMD ]]; then   # fail fast, before any setup
    log "fathomd not found or not executable: $FATHOMD (build it, or pass --fathomd)"; exit 1
fi

export PATH=$PATH:/usr/sbin:/sbin   # depmod, ldconfig, nvme live in sbin

# --- 1. packages ------------------------------------------------------------------
# command -> Debian package. Waits for a concurrent apt/dpkg via the lock timeout.
ensure_packages() {
    local -a missing=()
    local spec cmd pkg
    for spec in qemu-system-x86_64:qemu-system-x86 nvme:nvme-cli fio:fio cpio:cpio \
                depmod:kmod xz:xz-utils readelf:binutils mke2fs:e2fsprogs ldconfig:libc-bin; do
        cmd=${spec%%:*}; pkg=${spec#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    # busybox-static specifically: the dynamic "busybox" package cannot run in
    # the initramfs without its libc.
    dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=(busybox-static)
    compgen -G '/boot/vmlinuz-*-amd64' >/dev/null || missing+=(linux-image-amd64)
    ((${#missing[@]})) || return 0
    log "installing: ${missing[*]}"
    local apt=(apt-get -o DPkg::Lock::Timeout=900 install -y --no-install-recommends)
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}"; then
        # Only refresh the package lists when the install could not find something.
        apt-get -o DPkg::Lock::Timeout=900 update
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" "${missing[@]}"
    fi
}
ensure_packages

# --- 2. guest artifacts ----------------------------------------------------------
mkdir -p "$E2E_OUT"
[[ -e $E2E_OUT/.gitignore ]] || echo '*' > "$E2E_OUT/.gitignore"   # keep artifacts out of git
bash "$HERE/build-initramfs.sh" "$E2E_OUT"

# --- helpers ------------------------------------------------------------------------
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {  # a port nobody listens on; fathomd binding it is the real test
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        port_in_use "$p" || { echo "$p"; return 0; }
    done
    return 1
}
wait_port() {  # $1 port, $2 seconds, $3 pid that must stay alive
    local deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        port_in_use "$1" && return 0
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/fathom-e2e.XXXXXX")
DAEMON_PID=
cleanup() {
    if [[ -n $DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
    fi
    if ((KEEP)); then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
rm -rf "$RUN_DIR"; mkdir -p "$RUN_DIR"
GUEST_SCRIPT=$RUN_DIR/guest-script.sh
RESULT=$RUN_DIR/result.txt
export E2E_CONSOLE_LOG=$RUN_DIR/console.log

# FIO_* knobs are forwarded into the guest script when set on the host.
fio_vars() {
    local v
    for v in FIO_RAND_SIZE FIO_SEQ_SIZE FIO_IODEPTH; do
        [[ -n ${!v:-} ]] && printf '%s=%q\n' "$v" "${!v}"
    done
    return 0
}

GUEST_RC=0 DAEMON_RC=0 TARGET_RC=0
if [[ $MODE == selftest ]]; then
    # --- self-test: no fathomd -----------------------------------------------------
    mkdir -p "$TMP/www"
    TOKEN=fathom-e2e-$RANDOM$RANDOM
    echo "$TOKEN" > "$TMP/www/token.txt"
    HTTP_PORT=$(free_port); CLOSED_PORT=$(free_port)
    busybox httpd -f -p "127.0.0.1:$HTTP_PORT" -h "$TMP/www" &
    DAEMON_PID=$!
    wait_port "$HTTP_PORT" 10 "$DAEMON_PID" || { log "busybox httpd did not start"; exit 1; }
    log "http server on 127.0.0.1:$HTTP_PORT, closed port $CLOSED_PORT"
    {
        printf 'HTTP_PORT=%s\nHTTP_TOKEN=%s\nCLOSED_PORT=%s\n' "$HTTP_PORT" "$TOKEN" "$CLOSED_PORT"
        printf 'TARGET_PORT=4420\nSUBNQN=%s\n' "$SUBNQN"
        fio_vars
        echo '('; cat "$HERE/guest-smoke.sh"; echo '); SMOKE_RC=$?'
        echo '('; cat "$HERE/guest-nvmet-target.sh" "$HERE/guest-tests.sh"; echo '); TESTS_RC=$?'
        echo 'echo "smoke rc=$SMOKE_RC tests rc=$TESTS_RC"; [ $SMOKE_RC -eq 0 ] && [ $TESTS_RC -eq 0 ]'
    } > "$GUEST_SCRIPT"
    bash "$HERE/run-guest.sh" "$E2E_OUT" "$GUEST_SCRIPT" "$RESULT" || GUEST_RC=$?
    kill "$DAEMON_PID" 2>/dev/null || true; wait "$DAEMON_PID" 2>/dev/null || true; DAEMON_PID=
else
    # --- 3. backing file + config ------------------------------------------------
    truncate -s 256M "$TMP/ns1.img"
    PORT=$(free_port) || { log "no free port"; exit 1; }
    NS_UUID=$(cat /proc/sys/kernel/random/uuid)
    NGUID=$(tr -d - < /proc/sys/kernel/random/uuid)
    CONFIG=$TMP/config.json
    cat > "$CONFIG" <<EOF
{"hosts": [], "ports": [{"addr": {"adrfam": "ipv4", "traddr": "127.0.0.1", "treq": "not specified", "trsvcid": "$PORT", "trtype": "tcp"}, "portid": 1, "referrals": [], "subsystems": ["$SUBNQN"]}], "subsystems": [{"allowed_hosts": [], "attr": {"allow_any_host": "1", "model": "Fathom", "serial": "fathom-e2e-0001"}, "namespaces": [{"device": {"nguid": "$NGUID", "path": "$TMP/ns1.img", "uuid": "$NS_UUID"}, "enable": 1, "nsid": 1}], "nqn": "$SUBNQN"}]}
EOF
    cp "$CONFIG" "$RUN_DIR/config.json"

    # --- 4. start fathomd ----------------------------------------------------------
    DAEMON_LOG=$RUN_DIR/fathomd.log
    log "starting $FATHOMD on 127.0.0.1:$PORT (log: $DAEMON_LOG)"
    "$FATHOMD" --config "$CONFIG" > "$DAEMON_LOG" 2>&1 </dev/null &
    DAEMON_PID=$!
    if ! wait_port "$PORT" 30 "$DAEMON_PID"; then
        log "fathomd did not accept connections on $PORT within 30 s"
        tail -n 40 "$DAEMON_LOG" | sed 's/^/  | /' >&2
        exit 1
    fi
    log "fathomd is listening (pid $DAEMON_PID)"

    # --- 5. guest --------------------------------------------------------------------
    { printf 'TARGET_PORT=%s\nSUBNQN=%s\n' "$PORT" "$SUBNQN"; fio_vars; cat "$HERE/guest-tests.sh"; } > "$GUEST_SCRIPT"
    bash "$HERE/run-guest.sh" "$E2E_OUT" "$GUEST_SCRIPT" "$RESULT" || GUEST_RC=$?

    # --- target side: every controller the guest created was torn down again ------------
    # (I/O queues of a removed controller close on the reactors' 1 s tick.)
    sleep 2
    created=$(grep -o 'controller [0-9]* created' "$DAEMON_LOG" | awk '{print $2}' | sort -n | tr '\n' ' ')
    removed=$(grep -o 'controller [0-9]* removed' "$DAEMON_LOG" | awk '{print $2}' | sort -n | tr '\n' ' ')
    if [[ -n $created && $created == "$removed" ]]; then
        log "PASS: fathomd freed every controller after disconnect (created: $created)"
    else
        log "FAIL: controllers left on the target (created: $created; removed: $removed)"
        TARGET_RC=1
    fi

    # --- 6. graceful shutdown ----------------------------------------------------------
    if kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID"
        for _ in $(seq 1 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$DAEMON_PID" 2>/dev/null; then
            log "FAIL: fathomd still running 10 s after SIGTERM; killing"
            kill -KILL "$DAEMON_PID" 2>/dev/null || true
            wait "$DAEMON_PID" 2>/dev/null || true
            DAEMON_RC=124
        else
            wait "$DAEMON_PID" || DAEMON_RC=$?
        fi
    else
        log "FAIL: fathomd died during the test"
        wait "$DAEMON_PID" || DAEMON_RC=$?; ((DAEMON_RC)) || DAEMON_RC=1
    fi
    DAEMON_PID=
    ((DAEMON_RC == 0)) && log "PASS: fathomd exited 0 after SIGTERM" \
                       || log "FAIL: fathomd exit status $DAEMON_RC"
    log "fathomd log tail ($DAEMON_LOG):"
    tail -n 30 "$DAEMON_LOG" | sed 's/^/  | /' >&2
fi

# --- summary -------------------------------------------------------------------------
log "guest results ($RESULT):"
tr -d '\r' < "$RESULT" | grep -E '^(PASS|FAIL|INFO|SUMMARY|SMOKE|E2E_)' | sed 's/^/  /' >&2 || true
log "total $((SECONDS - T_START))s; logs in $RUN_DIR"
if ((GUEST_RC != 0 || DAEMON_RC != 0 || TARGET_RC != 0)); then
    log "FAILED (guest rc=$GUEST_RC, fathomd rc=$DAEMON_RC, target-side checks rc=$TARGET_RC)"
    exit 1
fi
log "OK"
