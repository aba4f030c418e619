# shellcheck shell=bash
# host-fixtures.sh — sourced by kernel-e2e.sh (fathom mode); not run directly.
# Builds what fathomd serves to the guest:
#   make_dataset DIR   -> DIR/dataset.img (ext4, read-only dataset namespace)
#                         DIR/dataset.sha256 (sums of its files, for the guest)
#   setup_loop FILE    -> LOOP_DEV (raw block device backend for nsid 2)
#   detach_loop        -> undoes setup_loop (safe to call twice / from a trap)
#   write_config OUT   -> nvmetcli JSON with the e2e and dataset subsystems
# All functions log through log() from kernel-e2e.sh.

# Dataset: a few MiB of random files in nested dirs, packed into an ext4 image
# by mkfs.ext4 -d (no mount, no root needed). Odd sizes catch short reads.
make_dataset() {
    local dir=$1 src=$1/dataset-src
    rm -rf "$src"; mkdir -p "$src/models/v1" "$src/models/v2/shards" "$src/text"
    head -c $((1536 * 1024)) /dev/urandom > "$src/models/v1/weights.bin"
    head -c $((1024 * 1024 + 4093)) /dev/urandom > "$src/models/v2/shards/shard-00.bin"
    head -c $((700 * 1024 + 17)) /dev/urandom > "$src/models/v2/shards/shard-01.bin"
    head -c $((256 * 1024)) /dev/urandom > "$src/models/v2/index.bin"
    head -c 3000 /dev/urandom | od -An -tx1 > "$src/text/notes.txt"
    echo "fathom e2e dataset $(date -u +%FT%TZ)" > "$src/README"
    # "./path" relative names, so the guest can run sha256sum -c in the mount point.
    (cd "$src" && find . -type f | LC_ALL=C sort | xargs sha256sum) > "$dir/dataset.sha256"
    rm -f "$dir/dataset.img"
    # -F: the target is a regular file; -E root_owner: files owned by root in the guest.
    mkfs.ext4 -q -F -L fathom-ds -E root_owner=0:0 -d "$src" "$dir/dataset.img" 48M >/dev/null
    log "dataset image: $(du -h --apparent-size "$dir/dataset.img" | cut -f1), $(wc -l < "$dir/dataset.sha256") files, $(du -sh "$src" | cut -f1) of data"
}

# Loop device over a sparse file, so nsid 2 exercises fathomd's block-device path
# (BLKGETSIZE64, O_DIRECT by default). LOOP_DEV stays empty on failure.
LOOP_DEV=
setup_loop() {
    local file=$1
    truncate -s 64M "$file"
    if ! LOOP_DEV=$(losetup -f --show "$file" 2>&1); then
        log "losetup -f --show $file failed: $LOOP_DEV"; LOOP_DEV=; return 1
    fi
    LOOP_FILE=$(readlink -f "$file")
    log "loop device $LOOP_DEV -> $file"
}
# Only ever detaches the device we attached, and only while it still points at
# our file (another process may have reused the number after an autoclear).
detach_loop() {
    [[ -n ${LOOP_DEV:-} ]] || return 0
    if losetup -nO BACK-FILE "$LOOP_DEV" 2>/dev/null | grep -qF "$LOOP_FILE"; then
        # If fathomd still holds it open, -d sets autoclear and the kernel
        # detaches it on last close; either way it is gone after the run.
        losetup -d "$LOOP_DEV" || log "WARNING: losetup -d $LOOP_DEV failed"
    fi
    LOOP_DEV=
}

# $1 output, $2 port, $3 e2e subsystem NQN, $4 ns1 file, $5 ns2 device ("" = none),
# $6 dataset NQN, $7 dataset image, $8 discovery-only port ("" = none).
# "readonly" is Fathom's own namespace key.
write_config() {
    local out=$1 port=$2 nqn=$3 ns1=$4 ns2=$5 dsnqn=$6 dsimg=$7 dport=${8:-}
    jq -n --arg port "$port" --arg nqn "$nqn" --arg ns1 "$ns1" --arg ns2 "$ns2" --arg dport "$dport" \
          --arg dsnqn "$dsnqn" --arg dsimg "$dsimg" \
          --arg u1 "$(new_uuid)" --arg g1 "$(new_nguid)" \
          --arg u2 "$(new_uuid)" --arg g2 "$(new_nguid)" \
          --arg u3 "$(new_uuid)" --arg g3 "$(new_nguid)" '
      def ns($id; $path; $u; $g): {device: {nguid: $g, path: $path, uuid: $u}, enable: 1, nsid: $id};
      def subsys($nqn; $serial; $nss): {allowed_hosts: [], nqn: $nqn, namespaces: $nss,
          attr: {allow_any_host: "1", model: "Fathom", serial: $serial}};
      {hosts: [],
       ports: ([{addr: {adrfam: "ipv4", traddr: "127.0.0.1", treq: "not specified", trsvcid: $port, trtype: "tcp"},
                 portid: 1, referrals: [], subsystems: [$nqn, $dsnqn]}]
               + (if $dport == "" then [] else
                  [{addr: {adrfam: "ipv4", traddr: "127.0.0.1", treq: "not specified", trsvcid: $dport, trtype: "tcp"},
                    portid: 2, subsystems: [],
                    referrals: [{name: "peer", addr: {adrfam: "ipv4", traddr: "192.0.2.9", trsvcid: "8009", trtype: "tcp", portid: "5"}}]}]
                  end)),
       subsystems: [
         subsys($nqn; "fathom-e2e-0001";
                [ns(1; $ns1; $u1; $g1)] + (if $ns2 == "" then [] else [ns(2; $ns2; $u2; $g2)] end)),
         subsys($dsnqn; "fathom-e2e-ds01"; [ns(1; $dsimg; $u3; $g3) + {readonly: true}])
       ]}' > "$out"
}
new_uuid() { cat /proc/sys/kernel/random/uuid; }
new_nguid() { tr -d - < /proc/sys/kernel/random/uuid; }
