#!/usr/bin/env bash
# build-initramfs.sh OUTDIR
#
# Builds the guest side of the kernel e2e harness from the Debian kernel
# package installed under /boot + /lib/modules (NOT the running host kernel,
# which has no nvme modules):
#   OUTDIR/vmlinux            uncompressed ELF (PVH entry, boots ~2x faster
#                             under TCG than bzImage), or
#   OUTDIR/bzImage            fallback copy of /boot/vmlinuz-* if extraction fails
#   OUTDIR/initramfs.cpio     busybox + nvme-cli + fio + nvme-tcp modules + /init,
#                             UNcompressed: ~95 MB, but under TCG inflating the
#                             40 MB gzip version costs ~5 s of guest boot vs
#                             ~1.5 s to unpack the plain one. E2E_INITRD_GZIP=1
#                             writes initramfs.cpio.gz instead.
#   OUTDIR/kernel-version     the kernel version the artifacts belong to
# /test.sh is NOT in the image: run-guest.sh appends it per run.
# Rebuild is skipped when the artifacts are newer than every input.
set -euo pipefail

OUTDIR=${1:?usage: build-initramfs.sh OUTDIR}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
log() { echo "[build-initramfs] $*" >&2; }

# --- pick the newest installed Debian kernel --------------------------------
KVER=$(ls -1 /boot/vmlinuz-*-amd64 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V | tail -n1 || true)
[[ -n "$KVER" && -d /lib/modules/$KVER ]] || { log "no /boot/vmlinuz-*-amd64 with modules (install linux-image-amd64)"; exit 1; }
VMLINUZ=/boot/vmlinuz-$KVER
KCONFIG=/boot/config-$KVER
MODDIR=/lib/modules/$KVER
BINS=(/bin/busybox "$(command -v nvme)" "$(command -v fio)")
# The kernel must have the NVMe/TCP host (=m or =y); virtio-net etc. are handled
# below (modprobe --show-depends reports "builtin" for =y drivers).
for opt in CONFIG_NVME_TCP CONFIG_NVME_FABRICS CONFIG_VIRTIO_NET CONFIG_PVH; do
    log "$(grep -E "^(# )?${opt}[= ]" "$KCONFIG" 2>/dev/null || echo "$opt: unknown (no $KCONFIG)")"
done
grep -qE '^CONFIG_NVME_TCP=[ym]' "$KCONFIG" || { log "kernel $KVER lacks CONFIG_NVME_TCP"; exit 1; }

# --- cache check --------------------------------------------------------------
if [[ ${E2E_INITRD_GZIP:-0} == 1 ]]; then INITRD=$OUTDIR/initramfs.cpio.gz; PACK=(gzip -1)
else INITRD=$OUTDIR/initramfs.cpio; PACK=(cat); fi
if [[ -f $INITRD && -f $OUTDIR/bzImage && "$(cat "$OUTDIR/kernel-version" 2>/dev/null)" == "$KVER" ]]; then
    stale=$(find "$VMLINUZ" "$MODDIR/modules.dep" "${BINS[@]}" "$HERE/build-initramfs.sh" "$HERE/guest-init.sh" \
                 -newer "$INITRD" -print -quit 2>/dev/null || true)
    if [[ -z "$stale" ]]; then log "up to date ($KVER) in $OUTDIR"; exit 0; fi
    log "rebuilding: $stale is newer"
fi
log "kernel $KVER -> $OUTDIR"

# --- kernel image ---------------------------------------------------------------
# Debian compresses the kernel (xz on bookworm). Find the payload by its magic
# and decompress it; trailing bytes after the stream are expected, so we only
# check that the result is an ELF with a PVH entry note (Xen note type 0x12).
rm -f "$OUTDIR/vmlinux" "$OUTDIR/bzImage" "$OUTDIR/kernel-version"
extract_vmlinux() {
    local magic cmd off
    for spec in 'xz:\xfd7zXZ\x00:xz -dc --single-stream' \
                'zstd:\x28\xb5\x2f\xfd:zstd -dc' \
                'gzip:\x1f\x8b\x08:gzip -dc' \
                'lz4:\x02\x21\x4c\x18:lz4 -dc'; do
        magic=${spec#*:}; cmd=${magic#*:}; magic=${magic%%:*}
        command -v "${cmd%% *}" >/dev/null || continue
        for off in $(LC_ALL=C grep -obUaP "$magic" "$VMLINUZ" | cut -d: -f1 | head -n 5); do
            tail -c +$((off + 1)) "$VMLINUZ" | $cmd > "$OUTDIR/vmlinux.tmp" 2>/dev/null || true
            if [[ "$(head -c 4 "$OUTDIR/vmlinux.tmp" | od -An -c | tr -d ' ')" == '177ELF' ]] &&
               { ! command -v readelf >/dev/null ||   # no binutils: run-guest falls back
                 readelf -n "$OUTDIR/vmlinux.tmp" 2>/dev/null | grep -q 'Xen.*0x00000012'; }; then
                mv "$OUTDIR/vmlinux.tmp" "$OUTDIR/vmlinux"
                log "extracted vmlinux (${spec%%:*} payload at offset $off)"
                return 0
            fi
        done
    done
    rm -f "$OUTDIR/vmlinux.tmp"
    return 1
}
# bzImage is always kept: run-guest.sh falls back to it if PVH boot fails.
cp "$VMLINUZ" "$OUTDIR/bzImage"
extract_vmlinux || log "could not extract a PVH-bootable vmlinux; will boot bzImage"

# --- staging tree ----------------------------------------------------------------
STAGE=$(mktemp -d "$OUTDIR/stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE"/{bin,sbin,usr/bin,usr/sbin,etc/nvme,proc,sys,dev,run,tmp,mnt,root,var/tmp}

# busybox-static with one symlink per applet (busybox --list gives names only).
cp /bin/busybox "$STAGE/bin/busybox"
for a in $(/bin/busybox --list); do
    [[ $a == busybox ]] || ln -sf busybox "$STAGE/bin/$a"
done

# nvme-cli and fio plus every shared library ldd reports (Debian's fio links
# rbd/gluster/... directly, ~85 MB in total) and the dynamic loader. Files are
# put at their real path; symlinked names (ldd's) are recreated as symlinks.
copy_path() {  # copy a file into STAGE keeping its path, resolving symlinks
    local src=$1 real
    real=$(readlink -f "$src")
    mkdir -p "$STAGE$(dirname "$real")"
    [[ -e $STAGE$real ]] || cp "$real" "$STAGE$real"
    if [[ $src != "$real" && ! -e $STAGE$src ]]; then
        mkdir -p "$STAGE$(dirname "$src")"; ln -s "$real" "$STAGE$src"
    fi
}
for b in "${BINS[@]:1}"; do
    copy_path "$b"
    for lib in $(ldd "$b" | grep -o '/[^ ]*'); do copy_path "$lib"; done
done
# Debian's /lib, /lib64, /bin are real dirs or symlinks depending on usrmerge;
# make sure the loader path from the ELF interpreter exists in the image.
[[ -e $STAGE/lib64/ld-linux-x86-64.so.2 ]] || copy_path /lib64/ld-linux-x86-64.so.2
# A loader cache for the image, so libraries in non-default dirs (e.g. ceph/)
# resolve even without RUNPATH.
find "$STAGE" -name '*.so*' -printf '%h\n' | sed "s|^$STAGE||" | sort -u > "$STAGE/etc/ld.so.conf"
ldconfig -r "$STAGE" 2>/dev/null || log "ldconfig -r failed (continuing; default dirs still work)"

# --- kernel modules --------------------------------------------------------------
# Wanted modules (names as modprobe knows them on bookworm's 6.1). Optional ones
# (nvme-keyring/nvme-auth only exist on newer kernels; crc32c-intel needs SSE4.2,
# which -cpu max provides) are skipped when unknown. crc32c is not a modules.dep
# dependency of nvme-tcp (it is requested by crypto name when digests are on),
# so it is listed explicitly. virtio_net / virtio_pci are =m on Debian.
REQUIRED=(configfs nvme-core nvme-fabrics nvme-tcp crc32c_generic)
OPTIONAL=(nvme-keyring nvme-auth crc32c-intel libcrc32c virtio_pci virtio_net)
# Shipped but not loaded at boot (each insmod costs under TCG); modprobe-able.
ONDEMAND=(ext4 erofs nvmet-tcp)  # erofs: published dataset images; nvmet-tcp: in-guest reference target for --selftest
MODORDER=()
add_module() {  # $1=name $2=required(1/0); appends insmod order to MODORDER
    local out line path rel
    if ! out=$(modprobe -S "$KVER" --show-depends "$1" 2>/dev/null); then
        [[ $2 == 1 ]] && { log "required module $1 not found for $KVER"; exit 1; }
        log "optional module $1 not available (skipped)"; return 0
    fi
    while read -r line; do
        case $line in
            builtin*) log "$1: built in"; continue ;;
            insmod*) path=$(awk '{print $2}' <<<"$line") ;;
            *) continue ;;
        esac
        rel=${path#"$MODDIR"/}; rel=${rel%.xz}; rel=${rel%.zst}; rel=${rel%.gz}
        if [[ ! -f $STAGE/lib/modules/$KVER/$rel ]]; then
            mkdir -p "$STAGE/lib/modules/$KVER/$(dirname "$rel")"
            case $path in   # busybox insmod cannot decompress: store plain .ko
                *.xz) xz -dc "$path" ;; *.zst) zstd -dc "$path" ;; *.gz) gzip -dc "$path" ;;
                *) cat "$path" ;;
            esac > "$STAGE/lib/modules/$KVER/$rel"
        fi
        [[ " ${MODORDER[*]:-} " == *" $rel "* ]] || MODORDER+=("$rel")
    done <<<"$out"
}
for m in "${REQUIRED[@]}"; do add_module "$m" 1; done
for m in "${OPTIONAL[@]}"; do add_module "$m" 0; done
printf '%s\n' "${MODORDER[@]}" > "$STAGE/etc/modules.order"
for m in "${ONDEMAND[@]}"; do add_module "$m" 0; done
# modules.dep/alias for the subset, so on-demand loads (request_module for
# "crypto-crc32c" etc.) via busybox modprobe also work.
cp "$MODDIR"/modules.{order,builtin,builtin.modinfo} "$STAGE/lib/modules/$KVER/" 2>/dev/null || true
depmod -b "$STAGE" "$KVER"
log "modules loaded at boot: $(wc -l < "$STAGE/etc/modules.order") ($(tr '\n' ' ' < "$STAGE/etc/modules.order" | sed 's|[^ ]*/||g'))"

# --- host identity -----------------------------------------------------------------
HOSTID=$(cat /proc/sys/kernel/random/uuid)
echo "nqn.2014-08.org.nvmexpress:uuid:$HOSTID" > "$STAGE/etc/nvme/hostnqn"
echo "$HOSTID" > "$STAGE/etc/nvme/hostid"
echo 'root:x:0:0:root:/root:/bin/sh' > "$STAGE/etc/passwd"
echo 'root:x:0:' > "$STAGE/etc/group"
echo "$KVER" > "$STAGE/etc/kernel-version"

install -m 0755 "$HERE/guest-init.sh" "$STAGE/init"

# --- pack --------------------------------------------------------------------------
rm -f "$OUTDIR"/initramfs.cpio "$OUTDIR"/initramfs.cpio.gz  # only one may exist
(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) \
    | "${PACK[@]}" > "$INITRD.tmp"
mv "$INITRD.tmp" "$INITRD"
echo "$KVER" > "$OUTDIR/kernel-version"
log "done: $(du -h "$INITRD" | cut -f1) initramfs, kernel $(basename "$([[ -f $OUTDIR/vmlinux ]] && echo vmlinux || echo bzImage)")"
