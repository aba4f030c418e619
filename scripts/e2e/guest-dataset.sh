# guest-dataset.sh — defines test_dataset for guest-tests.sh (concatenated
# before it by kernel-e2e.sh; uses its helpers: run, pass, fail, say, our_*).
#
# Read-only dataset namespace shared by many hosts: subsystem $DATASET_NQN,
# nsid 1 = an ext4 image exported with "readonly": true. The host passes the
# expected file sums in /tmp/dataset.sha256 ("<sum>  ./path" lines).
DATASET_NQN=${DATASET_NQN:-nqn.2026-11.io.fathom:dataset}
DATASET_MNT=/mnt/dataset

# ds_connect [HOST_UUID]: connects to the dataset subsystem and prints the new
# controller. With HOST_UUID, as another host (host NQN/ID from that UUID),
# by writing the options to /dev/nvme-fabrics the way nvme-cli does: nvme-cli
# 2.3 refuses that with "already connected" (even with -D), because its check
# matches address + subsystem only; the kernel does tell the hosts apart.
ds_connect() {
    local before c opts
    before=" $(our_ctrls "$DATASET_NQN" | tr '\n' ' ') "
    if [ -n "${1:-}" ]; then
        opts="nqn=$DATASET_NQN,transport=tcp,traddr=$TARGET_ADDR,trsvcid=$TARGET_PORT"
        opts="$opts,hostnqn=nqn.2014-08.org.nvmexpress:uuid:$1,hostid=$1,ctrl_loss_tmo=30"
        echo "+ echo -n $opts > /dev/nvme-fabrics" >&2
        echo -n "$opts" > /dev/nvme-fabrics || return 1
    else
        run 60 nvme connect -t tcp -a "$TARGET_ADDR" -s "$TARGET_PORT" -n "$DATASET_NQN" \
            --ctrl-loss-tmo=30 >&2 || return 1
    fi
    for c in $(our_ctrls "$DATASET_NQN"); do
        case $before in *" $c "*) ;; *) echo "$c"; return 0 ;; esac
    done
    return 1
}

# Mount read-only and check every file's sum. ro: the device is read-only;
# noload: never try to replay the journal (that would write).
# The sums name "./path"; they are rewritten to absolute paths instead of
# cd-ing into the mount: busybox "timeout" leaves a watchdog process (cwd
# inherited) alive for up to a second, which would make umount fail with EBUSY.
ds_verify() {  # $1 label, $2 device, $3 filesystem (ext4 default, or erofs)
    local n i=0 fs=${3:-ext4} opts=ro,noload
    [ "$fs" = ext4 ] || opts=ro
    if ! run 30 mount -t "$fs" -o "$opts" "$2" "$DATASET_MNT"; then
        fail "[$1] mount -t $fs -o $opts $2: $(head -n1 /tmp/out)"; return 1
    fi
    sed "s|  \./|  $DATASET_MNT/|" /tmp/dataset.sha256 > /tmp/dataset-abs.sha256
    if run 120 sha256sum -c /tmp/dataset-abs.sha256; then
        n=$(grep -c ': OK$' /tmp/out)
        pass "[$1] all $n dataset files match their host-side sha256 ($2 mounted ro)"
    else
        fail "[$1] dataset checksum mismatch: $(grep -v ': OK$' /tmp/out | head -n3 | tr '\n' ' ')"
    fi
    until umount "$DATASET_MNT"; do
        i=$((i + 1)); [ $i -lt 10 ] || { fail "[$1] umount $DATASET_MNT"; return 1; }
        sleep 0.5
    done
}

ds_teardown() {
    local i=0
    [ -n "$(our_ctrls "$DATASET_NQN")" ] || return 0
    run 60 nvme disconnect -n "$DATASET_NQN"
    while [ -n "$(our_ctrls "$DATASET_NQN")" ] && [ $i -lt 20 ]; do sleep 0.5; i=$((i + 1)); done
    if [ -z "$(our_ctrls "$DATASET_NQN")" ]; then pass "[dataset] disconnect (all controllers)"
    else fail "[dataset] controllers left: $(our_ctrls "$DATASET_NQN" | tr '\n' ' ')"; fi
}

test_dataset() {
    local L=dataset dev c1 c2 ro i u v
    mkdir -p "$DATASET_MNT"
    if ! c1=$(ds_connect); then fail "[$L] nvme connect -n $DATASET_NQN"; ds_teardown; return; fi
    if ! dev=$(wait_nsdev 1 "$DATASET_NQN" 20); then
        fail "[$L] no namespace device for $DATASET_NQN after 20 s"; ds_teardown; return
    fi
    pass "[$L] connect -> /dev/$c1, $dev"

    # The host kernel applies NSATTR bit 0 (write protected) with set_disk_ro()
    # while it (re)validates the namespace, which may lag the device node.
    i=0
    while ro=$(blockdev --getro "$dev" 2>&1) && [ "$ro" != 1 ] && [ $i -lt 20 ]; do sleep 0.5; i=$((i + 1)); done
    [ "$ro" = 1 ] && pass "[$L] blockdev --getro $dev = 1 (kernel honours NSATTR write protect)" \
                  || fail "[$L] blockdev --getro $dev = '$ro', want 1"

    # ext4 ships in the initramfs but is not loaded at boot (saves boot time).
    grep -qw ext4 /proc/filesystems || run 30 modprobe ext4 || fail "[$L] modprobe ext4: $(cat /tmp/out)"
    ds_verify $L "$dev"

    # Writes must be refused. dd: the block layer rejects writes to a read-only
    # disk (EPERM) before anything reaches the target.
    if run 30 dd if=/dev/zero of="$dev" bs=4096 count=1 oflag=direct; then
        fail "[$L] dd write to read-only $dev succeeded"
    else pass "[$L] dd write to $dev refused ($(grep '^dd:' /tmp/out | head -n1))"; fi
    # nvme write is a passthrough command, so this one is refused by the target
    # itself: require the NVMe status, not just any error. --force: skip
    # nvme-cli's own O_EXCL open (EBUSY while anything holds the disk), which
    # has nothing to do with the target.
    if run 30 nvme write "$dev" -s 0 -c 0 -z 512 -d /dev/zero --force; then
        fail "[$L] nvme write to read-only namespace succeeded"
    elif grep -qi 'write protected' /tmp/out; then
        pass "[$L] nvme write refused by the target: $(grep -i 'status' /tmp/out | head -n1)"
    else fail "[$L] nvme write failed, but not with 'Namespace is Write Protected': $(head -n2 /tmp/out | tr '\n' ' ')"; fi

    # Sharing: the controller must advertise multi-controller subsystem (CMIC
    # bit 1) and the namespace must be shared (NMIC bit 0); the Linux host
    # rejects a second controller ("Subsystem does not support multiple
    # controllers") or namespace path ("Duplicate unshared namespace") otherwise.
    if run 30 nvme id-ctrl "/dev/$c1"; then
        v=$(awk -F: '$1 ~ /^cmic *$/ {gsub(/ /, "", $2); print $2}' /tmp/out)
        has_bit "$v" 2 && pass "[$L] id-ctrl cmic=$v (multiple controllers)" \
                                            || fail "[$L] id-ctrl cmic='$v', want bit 1 set"
    else fail "[$L] id-ctrl /dev/$c1"; fi
    if run 30 nvme id-ns "$dev"; then
        v=$(awk -F: '$1 ~ /^nmic *$/ {gsub(/ /, "", $2); print $2}' /tmp/out)
        has_bit "$v" 1 && pass "[$L] id-ns nmic=$v (shared namespace)" \
                                            || fail "[$L] id-ns nmic='$v', want bit 0 set"
        say "INFO: [$L] id-ns $(grep -E '^(nsze|nsattr|dlfeat)[[:space:]]' /tmp/out | tr -s '\t ' ' ' | tr '\n' ' ')"
    else fail "[$L] id-ns $dev"; fi

    # A second host: same subsystem, different host NQN/ID. The 6.1 kernel
    # accepts it as a second controller (path) of the same subsystem, so the
    # namespace stays one multipath disk with two paths.
    u=$(cat /proc/sys/kernel/random/uuid)
    if c2=$(ds_connect "$u"); then
        pass "[$L] second host nqn...:uuid:$u connected -> /dev/$c2 ($(our_ctrls "$DATASET_NQN" | wc -l) controllers on $DATASET_NQN)"
        [ "$(cat "/sys/class/nvme/$c1/cntlid")" != "$(cat "/sys/class/nvme/$c2/cntlid")" ] \
            || fail "[$L] both controllers have cntlid $(cat "/sys/class/nvme/$c2/cntlid")"
        # Take host 1's path away; the data must still be readable via host 2.
        run 60 nvme disconnect -d "$c1"
        i=0
        while [ -e "/sys/class/nvme/$c1" ] && [ $i -lt 20 ]; do sleep 0.5; i=$((i + 1)); done
        if [ -e "/sys/class/nvme/$c1" ]; then fail "[$L] /dev/$c1 still present after disconnect -d"
        elif dev=$(wait_nsdev 1 "$DATASET_NQN" 10); then
            sync; echo 3 > /proc/sys/vm/drop_caches   # reads must go over the wire again
            ds_verify "$L via host 2 only" "$dev"
        else fail "[$L] namespace gone after removing only the first path"; fi
    else
        # Documented fallback: should a kernel refuse the second controller from
        # the same host kernel, the CMIC/NMIC checks above are the evidence.
        fail "[$L] second host connect refused: $(dmesg | grep -i nvme | tail -n2 | tr '\n' ' ')"
    fi
    ds_teardown
}

# A dataset image the host built with `fathomctl dataset build` (erofs) and exported
# with `fathomctl dataset publish` into $PUBLISHED_NQN: the namespace's NGUID is the
# first half of the image's SHA-256, it mounts as erofs and every file matches.
PUBLISHED_NQN=${PUBLISHED_NQN:-}
PUBLISHED_NGUID=${PUBLISHED_NGUID:-}
test_publish() {
    local L=publish dev nguid i=0
    [ -n "$PUBLISHED_NQN" ] || { fail "[$L] the host did not publish a dataset (see the kernel-e2e log)"; return; }
    mkdir -p "$DATASET_MNT"
    if ! run 60 nvme connect -t tcp -a "$TARGET_ADDR" -s "$TARGET_PORT" -n "$PUBLISHED_NQN" --ctrl-loss-tmo=30; then
        fail "[$L] nvme connect -n $PUBLISHED_NQN"; return
    fi
    if dev=$(wait_nsdev 1 "$PUBLISHED_NQN" 20); then
        if run 30 nvme id-ns "$dev"; then
            nguid=$(awk -F: '$1 ~ /^nguid *$/ {gsub(/ /, "", $2); print $2}' /tmp/out)
            [ "$nguid" = "$PUBLISHED_NGUID" ] && pass "[$L] $dev nguid $nguid = the image digest's first 16 bytes" \
                || fail "[$L] $dev nguid '$nguid', want $PUBLISHED_NGUID"
        else fail "[$L] id-ns $dev"; fi
        grep -qw erofs /proc/filesystems || run 30 modprobe erofs || fail "[$L] modprobe erofs: $(cat /tmp/out)"
        ds_verify $L "$dev" erofs
        # Once more after the target's residency scan (once a second) has seen the image in
        # its page cache, where the first reads put it: these come from the file's mapping,
        # which the host side checks by fathomd's count. The guest's own cache is dropped so
        # that they go over the wire.
        sync; echo 3 > /proc/sys/vm/drop_caches
        sleep 2
        ds_verify "$L again" "$dev" erofs
    else fail "[$L] no namespace device for $PUBLISHED_NQN after 20 s"; fi
    run 60 nvme disconnect -n "$PUBLISHED_NQN"
    while [ -n "$(our_ctrls "$PUBLISHED_NQN")" ] && [ $i -lt 20 ]; do sleep 0.5; i=$((i + 1)); done
}

# A clone namespace of the dataset's ext4 image ($CLONE_NQN, made by the host with
# `fathomctl namespace add --clone-of`): this host mounts it read-write, writes a file,
# remounts and reconnects (the file stays); another host NQN then sees the base unchanged.
CLONE_NQN=${CLONE_NQN:-}
CLONE_MNT=/mnt/clone
clone_connect() {  # [HOST_UUID]: as this host, or as another one (see ds_connect)
    local opts
    if [ -n "${1:-}" ]; then
        opts="nqn=$CLONE_NQN,transport=tcp,traddr=$TARGET_ADDR,trsvcid=$TARGET_PORT"
        opts="$opts,hostnqn=nqn.2014-08.org.nvmexpress:uuid:$1,hostid=$1,ctrl_loss_tmo=30"
        echo -n "$opts" > /dev/nvme-fabrics || return 1
    else
        run 60 nvme connect -t tcp -a "$TARGET_ADDR" -s "$TARGET_PORT" -n "$CLONE_NQN" --ctrl-loss-tmo=30 >&2 || return 1
    fi
    wait_nsdev 1 "$CLONE_NQN" 20
}
clone_disconnect() {
    local i=0
    run 60 nvme disconnect -n "$CLONE_NQN" >/dev/null
    while [ -n "$(our_ctrls "$CLONE_NQN")" ] && [ $i -lt 20 ]; do sleep 0.5; i=$((i + 1)); done
}
clone_umount() {
    local i=0
    until umount "$CLONE_MNT" 2>/dev/null; do i=$((i + 1)); [ $i -lt 10 ] || return 1; sleep 0.5; done
}
test_clone() {
    local L=clone dev token got
    [ -n "$CLONE_NQN" ] || { fail "[$L] the host made no clone namespace (see the kernel-e2e log)"; return; }
    mkdir -p "$CLONE_MNT"
    grep -qw ext4 /proc/filesystems || run 30 modprobe ext4
    dev=$(clone_connect) || { fail "[$L] connect to $CLONE_NQN"; return; }
    [ "$(blockdev --getro "$dev")" = 0 ] && pass "[$L] $dev is writable" || fail "[$L] $dev is read-only"
    if ! run 30 mount -t ext4 "$dev" "$CLONE_MNT"; then
        fail "[$L] mount -t ext4 $dev (read-write): $(head -n1 /tmp/out)"; clone_disconnect; return
    fi
    sed "s|  \./|  $CLONE_MNT/|" /tmp/dataset.sha256 > /tmp/clone.sha256
    run 120 sha256sum -c /tmp/clone.sha256 >/dev/null && pass "[$L] the clone shows the base's $(grep -c ': OK$' /tmp/out) files" \
        || fail "[$L] base files differ in the clone"
    token="fathom-clone-$(cat /proc/sys/kernel/random/uuid)"
    echo "$token" > "$CLONE_MNT/written-by-host-1.txt"
    rm -f "$CLONE_MNT/README"
    sync
    clone_umount || fail "[$L] umount"
    run 30 mount -t ext4 "$dev" "$CLONE_MNT"
    got=$(cat "$CLONE_MNT/written-by-host-1.txt" 2>/dev/null)
    [ "$got" = "$token" ] && [ ! -e "$CLONE_MNT/README" ] && pass "[$L] after remount: the written file is there, the deleted one gone" \
        || fail "[$L] after remount: '$got' (want $token)"
    clone_umount
    clone_disconnect
    # Same host, new connection: its clone persists on the target.
    if dev=$(clone_connect) && run 30 mount -t ext4 "$dev" "$CLONE_MNT"; then
        got=$(cat "$CLONE_MNT/written-by-host-1.txt" 2>/dev/null)
        [ "$got" = "$token" ] && pass "[$L] after reconnect: this host's clone still has its file" || fail "[$L] after reconnect: '$got'"
        clone_umount
    else fail "[$L] reconnect + mount"; fi
    clone_disconnect
    # The raw clone under the kernel's own random writes, verified: 4 KiB and 68 KiB writes
    # (inside a 64 KiB chunk and across two) at queue depth 16 with an fsync every 32 writes,
    # so first writes copy chunks up on the target's storage workers while later ones go
    # through its ring, and Flushes run between them.
    if dev=$(clone_connect); then
        if run 300 fio --name=clone-verify --filename="$dev" --direct=1 --ioengine="$FIO_ENGINE" --iodepth=16 --rw=randwrite \
                --bssplit=4k/70:68k/30 --size=16M --fsync=32 --verify=crc32c --do_verify=1 --verify_fatal=1 \
                --verify_state_save=0 --group_reporting; then
            pass "[$L] fio random writes (4 KiB and 68 KiB, QD16, fsync) on the clone verify"
        else fail "[$L] fio on the clone: $(grep -m1 -iE 'verify|error' /tmp/out)"; fi
        nuse=$(nvme id-ns "$dev" 2>/dev/null | awk '/^nuse/ {print $3}')
        [ -n "$nuse" ] && [ "$((nuse))" -gt 0 ] && pass "[$L] id-ns: NUSE $nuse, the blocks this host wrote" \
            || fail "[$L] id-ns NUSE '$nuse' after this host wrote"
    else fail "[$L] connect for fio"; fi
    clone_disconnect
    # Another host NQN gets its own clone: the base, without host 1's changes.
    if dev=$(clone_connect "$(cat /proc/sys/kernel/random/uuid)") && run 30 mount -t ext4 -o ro,noload "$dev" "$CLONE_MNT"; then
        if [ ! -e "$CLONE_MNT/written-by-host-1.txt" ] && [ -e "$CLONE_MNT/README" ]; then
            pass "[$L] a second host sees the base unchanged (no file of host 1, README still there)"
        else fail "[$L] a second host sees host 1's changes"; fi
        nuse=$(nvme id-ns "$dev" 2>/dev/null | awk '/^nuse/ {print $3}')
        [ "$nuse" = 0 ] || [ "$nuse" = 0x0 ] && pass "[$L] the second host's NUSE is 0 (it wrote nothing)" \
            || fail "[$L] the second host's NUSE is '$nuse'"
        clone_umount
    else fail "[$L] second host connect + mount"; fi
    clone_disconnect
}
