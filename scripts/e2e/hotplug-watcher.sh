#!/usr/bin/env bash
# hotplug-watcher.sh RESULT CONFIG DAEMON_PID ACK_DIR ACK_PORT SUBNQN NS1_FILE NS3_FILE [DAEMON_LOG]
#
# Host half of the hot-plug protocol (guest half: guest-hotplug.sh). Started in
# the background by kernel-e2e.sh while the guest runs; stops when killed or
# when its parent exits.
#   guest -> host: a line "HOTPLUG_REQUEST <op>" on the result channel (ttyS1,
#                  i.e. the RESULT file this script polls), op = add|resize|remove
#   host  -> guest: ACK_DIR/<op> = "ok <detail>" or "error <detail>", served by
#                  busybox httpd on 127.0.0.1:ACK_PORT (guest: wget 10.0.2.2:ACK_PORT/<op>)
# Actions:
#   add     fathomctl namespace add: nsid 3 (NS3_FILE, a new 32 MiB sparse file) in
#           SUBNQN, then fathomctl save (so the SIGHUP below keeps it)
#   resize  grow NS1_FILE by 64 MiB, then SIGHUP (config reload picks up the size)
#   remove  fathomctl namespace remove nsid 3, then fathomctl save
#   acl-create | acl-allow HOST | acl-deny HOST | acl-remove   (see guest-acl.sh)
#   ana-inaccessible | ana-optimized: ANA group 1's state through port 1 (guest-ana.sh)
# fathomctl talks to $E2E_CONTROL_SOCKET; without $E2E_FATHOMCTL the old way is used
# (edit the config, SIGHUP).
# The ack only says the host did its part; whether the guest saw the change
# without reconnecting is what the guest checks.
set -euo pipefail
RESULT=$1 CONFIG=$2 DPID=$3 ACK_DIR=$4 ACK_PORT=$5 SUBNQN=$6 NS1=$7 NS3=$8 DLOG=${9:-/dev/null}
PARENT=$PPID
log() { echo "[hotplug] $*" >&2; }
mkdir -p "$ACK_DIR"

# The ack channel. busybox-static is installed by kernel-e2e.sh anyway.
busybox httpd -f -p "127.0.0.1:$ACK_PORT" -h "$ACK_DIR" &
HTTPD=$!
trap 'kill "$HTTPD" 2>/dev/null || true' EXIT
trap 'exit 0' TERM INT

ack() {  # $1 op, $2 ok|error, rest detail; written atomically (httpd may be reading)
    local op=$1; shift
    printf '%s\n' "$*" > "$ACK_DIR/.$op.tmp" && mv "$ACK_DIR/.$op.tmp" "$ACK_DIR/$op"
    log "$op -> $*"
}

# SIGHUP's default action is "terminate". Before sending it, make sure fathomd
# handles it (caught or ignored process-wide, or blocked in every thread, i.e.
# taken by sigwait): otherwise a daemon without config reload would just die
# and take every other check down with it. SIGHUP is bit 0 of the masks.
sighup_handled() {
    local st mask
    for mask in SigCgt SigIgn; do
        st=$(awk -v k="$mask:" '$1 == k {print $2}' "/proc/$DPID/status" 2>/dev/null) || return 1
        [[ -n $st ]] && (( 0x$st & 1 )) && return 0
    done
    for st in /proc/"$DPID"/task/*/status; do
        mask=$(awk '$1 == "SigBlk:" {print $2}' "$st" 2>/dev/null) || return 1
        [[ -n $mask ]] && (( 0x$mask & 1 )) || return 1
    done
    return 0
}

# Send SIGHUP, give fathomd a moment, report whether it survived plus what it
# logged meanwhile (the reload's own messages).
reload() {  # $1 op
    local before after new
    before=$(stat -c %s "$DLOG" 2>/dev/null || echo 0)
    kill -HUP "$DPID"
    sleep 1.5
    after=$(stat -c %s "$DLOG" 2>/dev/null || echo 0)
    new=$(tail -c +$((before + 1)) "$DLOG" 2>/dev/null | head -c $((after - before)) || true)
    [[ -n $new ]] && printf '%s\n' "$new" | sed "s/^/[hotplug] $1: fathomd | /" >&2
    if ! kill -0 "$DPID" 2>/dev/null; then
        ack "$1" "error fathomd died after SIGHUP"; return 1
    fi
    local last
    last=$(printf '%s\n' "$new" | grep -v '^$' | tail -n1 | sed 's/^[^ ]* [a-z]* fathomd: //' | cut -c1-160 || true)
    ack "$1" "ok SIGHUP sent, fathomd alive; log: ${last:-(nothing logged)}"
}

edit_config() {  # $1 jq filter (gets $nqn, $path, $u, $g); atomic replace
    jq --arg nqn "$SUBNQN" --arg path "$NS3" --arg u "$(cat /proc/sys/kernel/random/uuid)" \
       --arg g "$(tr -d - < /proc/sys/kernel/random/uuid)" "$1" "$CONFIG" > "$CONFIG.new" &&
        mv "$CONFIG.new" "$CONFIG"
}

# The running fathomd: kernel-e2e.sh's supervisor writes its pid here (it changes when the
# crash test restarts it).
current_pid() { if [[ -n ${E2E_PIDFILE:-} && -s $E2E_PIDFILE ]]; then cat "$E2E_PIDFILE"; else echo "$DPID"; fi; }

# kill -9 of fathomd; the supervisor starts it again; ack once the new one listens.
crash() {
    local old=$1 new
    if [[ -z ${E2E_RESTART_MARKER:-} || -z ${E2E_TARGET_PORT:-} ]]; then ack crash "error no supervisor to restart fathomd"; return; fi
    touch "$E2E_RESTART_MARKER"
    kill -9 "$old"
    log "crash: fathomd (pid $old) killed with SIGKILL"
    for _ in $(seq 1 150); do
        new=$(current_pid)
        if [[ $new != "$old" ]] && (exec 3<>"/dev/tcp/127.0.0.1/$E2E_TARGET_PORT") 2>/dev/null; then
            ack crash "ok fathomd killed with SIGKILL (pid $old) and restarted (pid $new)"; return
        fi
        sleep 0.1
    done
    ack crash "error fathomd did not come back within 15 s"
}

# fathomctl with the daemon's socket; ack "ok <its output>" or "error <its output>".
ctl() {  # $1 op (for the ack), rest: fathomctl arguments
    local op=$1 out; shift
    if out=$("$E2E_FATHOMCTL" --socket "$E2E_CONTROL_SOCKET" "$@" 2>&1); then
        log "$op: fathomctl $* -> $(echo "$out" | tr '\n' ';')"
        return 0
    fi
    ack "$op" "error fathomctl $*: $(echo "$out" | tr '\n' ';' | cut -c1-300)"
    return 1
}
ACL_NQN=${E2E_ACL_NQN:-nqn.2026-11.io.fathom:e2e-acl}
ACL_OTHER_HOST=nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-0000000000aa

handle() {  # $1 op, $2 argument (a host NQN for acl-allow/acl-deny)
    local op=$1 arg=${2:-}
    DPID=$(current_pid)
    if ! kill -0 "$DPID" 2>/dev/null; then ack "$op" "error fathomd (pid $DPID) is not running"; return; fi
    if [[ $op == crash ]]; then crash "$DPID"; return; fi
    if ! sighup_handled; then
        ack "$op" "error fathomd (pid $DPID) neither catches, ignores nor blocks SIGHUP, so SIGHUP would kill it (no config reload?); nothing changed, no signal sent"
        return
    fi
    if [[ -n ${E2E_FATHOMCTL:-} ]]; then
        case $op in
            add)
                truncate -s 32M "$NS3"
                ctl add namespace add --subsystem "$SUBNQN" --nsid 3 --path "$NS3" && ctl add save &&
                    ack add "ok fathomctl namespace add --nsid 3 --path $NS3; fathomctl save"
                return ;;
            remove)
                ctl remove namespace remove --subsystem "$SUBNQN" --nsid 3 && ctl remove save &&
                    ack remove "ok fathomctl namespace remove --nsid 3; fathomctl save"
                return ;;
            acl-create)
                ctl "$op" subsystem add "$ACL_NQN" --allowed-host "$ACL_OTHER_HOST" --port 1 &&
                    ctl "$op" namespace add --subsystem "$ACL_NQN" --nsid 1 --null 64M &&
                    ack "$op" "ok fathomctl subsystem add $ACL_NQN (allowed: $ACL_OTHER_HOST) + null namespace"
                return ;;
            acl-allow | acl-deny)
                ctl "$op" host "${op#acl-}" --subsystem "$ACL_NQN" "$arg" && ack "$op" "ok fathomctl host ${op#acl-} $arg"
                return ;;
            acl-remove)
                ctl "$op" subsystem remove "$ACL_NQN" && ack "$op" "ok fathomctl subsystem remove $ACL_NQN"
                return ;;
            ana-inaccessible | ana-optimized)
                ctl "$op" port ana --id 1 --group 1 --state "${op#ana-}" && ack "$op" "ok fathomctl port ana --id 1 --group 1 --state ${op#ana-}"
                return ;;
        esac
    fi
    case $op in
        add)
            truncate -s 32M "$NS3"
            edit_config '(.subsystems[] | select(.nqn == $nqn) | .namespaces) +=
                [{device: {nguid: $g, path: $path, uuid: $u}, enable: 1, nsid: 3}]' \
                || { ack add "error could not edit $CONFIG"; return; } ;;
        resize)
            truncate -s +64M "$NS1" || { ack resize "error truncate $NS1 failed"; return; }
            log "resize: $NS1 is now $(stat -c %s "$NS1") bytes" ;;
        remove)
            edit_config '(.subsystems[] | select(.nqn == $nqn) | .namespaces) |= map(select(.nsid != 3))' \
                || { ack remove "error could not edit $CONFIG"; return; } ;;
        *) ack "$op" "error unknown request '$op'"; return ;;
    esac
    reload "$op" || true
}

# Poll the result file by complete lines; it is truncated when the guest
# (re)boots, so restart from the top if it shrinks.
done_lines=0
while kill -0 "$PARENT" 2>/dev/null; do
    [[ -f $RESULT ]] || { sleep 0.3; continue; }   # run-guest.sh creates it at boot
    lines=$(wc -l < "$RESULT")
    ((lines < done_lines)) && done_lines=0
    if ((lines > done_lines)); then
        while IFS= read -r line; do
            line=${line%$'\r'}
            case $line in
                HOTPLUG_REQUEST\ *) op=${line#HOTPLUG_REQUEST }; log "request: $op"; read -r -a words <<< "$op"; handle "${words[@]}" ;;
            esac
        done < <(sed -n "$((done_lines + 1)),${lines}p" "$RESULT")
        done_lines=$lines
    fi
    sleep 0.3
done
