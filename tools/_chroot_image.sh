# shellcheck shell=bash
# Functions shared by tools/build_chroot.sh and docker/docker_to_chroot.sh: size a FIRE chroot
# image for a root folder and write it, an ext4 (or ext3) file system in a plain file (`mke2fs -d`: no loop
# device, no mount, no root rights needed for this step).
#
#   source tools/_chroot_image.sh
#   size=$(chroot_image_size_mb DIR BUFFER_MB)        # sizing rule of python-ismrmrd-server's scripts
#   chroot_image_write DIR IMG SIZE_MB [FS_TYPE]       # FS_TYPE: ext4 (default) or ext3 (as upstream)
#   chroot_image_from_tar TAR TREE IMG BUFFER_MB [SIZE_MB [FS_TYPE]]  # a `docker export` tarball
#   chroot_image_summary IMG                           # "IMG: N MB, ext4, U MB used, F MB free"
#
# Sizes are in MB of 1024*1024 bytes (`dd bs=1M` in upstream's scripts). The image is a whole number
# of 100 MB with at least BUFFER_MB + 15 % of the content free for file-system overhead and
# temporary files, the rule of upstream's docker_tar_to_chroot.sh, whose images FIRE scanners run.

CHROOT_IMAGE_STEP_MB=100
CHROOT_IMAGE_OVERHEAD_PCT=15
CHROOT_IMAGE_BLOCK=4096

chroot_image_die() {
    echo "error: $*" >&2
    exit 1
}

# MB that DIR's files take on a 4 KiB-block file system (each file and folder rounded up to whole
# blocks, hard links counted once, short symbolic links stored in their inode), rounded up.
chroot_image_content_mb() {
    local dir=$1
    [ -d "$dir" ] || chroot_image_die "no folder $dir"
    find "$dir" -xdev -printf '%i %n %s %y\n' | awk -v block="$CHROOT_IMAGE_BLOCK" '
        $4 == "f" && $2 > 1 { if (seen[$1]++) next }
        $4 == "l" && $3 < 60 { next }
        $4 == "f" || $4 == "d" || $4 == "l" { total += int(($3 + block - 1) / block) * block }
        END { printf "%d\n", (total + 1048575) / 1048576 }'
}

# Number of entries (inodes) under DIR.
chroot_image_entries() {
    find "$1" -xdev -printf '.' | wc -c
}

# Image size in MB for DIR with BUFFER_MB of free space: content + 15 %, + buffer, rounded up to
# the next whole 100 MB.
chroot_image_size_mb() {
    local dir=$1 buffer_mb=${2:-50} content_mb
    content_mb=$(chroot_image_content_mb "$dir")
    local min_mb=$((content_mb + content_mb * CHROOT_IMAGE_OVERHEAD_PCT / 100 + buffer_mb))
    echo $(((min_mb + CHROOT_IMAGE_STEP_MB - 1) / CHROOT_IMAGE_STEP_MB * CHROOT_IMAGE_STEP_MB))
}

# Write DIR as the file system of IMG (replaced), SIZE_MB large. The tree keeps its owners, modes,
# times, device nodes, symbolic and hard links. Room for twice DIR's entries, and never fewer
# inodes than mke2fs gives by default (one per 16 KiB), so code copied in later fits.
chroot_image_write() {
    local dir=$1 img=$2 size_mb=$3 fs_type=${4:-ext4}
    [ -d "$dir" ] || chroot_image_die "no folder $dir"
    case $size_mb in
        '' | *[!0-9]*) chroot_image_die "image size must be a whole number of MB, not '$size_mb'" ;;
    esac
    case $fs_type in
        ext3 | ext4) ;;
        *) chroot_image_die "file system type must be ext3 or ext4, not '$fs_type'" ;;
    esac
    command -v mke2fs >/dev/null || chroot_image_die "mke2fs not found (Debian package e2fsprogs)"
    local entries inodes default_inodes
    entries=$(chroot_image_entries "$dir")
    default_inodes=$((size_mb * 1024 * 1024 / 16384))
    inodes=$((entries * 2 > default_inodes ? entries * 2 : default_inodes))
    mkdir -p "$(dirname "$img")"
    local tmp="$img.part"
    rm -f "$tmp"
    truncate -s "${size_mb}M" "$tmp"
    # -m 0: no blocks reserved for root (the server runs as root: free space is free space).
    if ! mke2fs -q -F -t "$fs_type" -b "$CHROOT_IMAGE_BLOCK" -m 0 -N "$inodes" -L mrd-server \
            -d "$dir" "$tmp" >&2; then
        rm -f "$tmp"
        chroot_image_die "mke2fs could not write $dir into a $size_mb MB image (too small? give a larger size)"
    fi
    mv -f "$tmp" "$img"
}

# Free and used MB of IMG's file system, from its superblock: "FREE_MB USED_MB TOTAL_MB FS_TYPE".
chroot_image_space() {
    local img=$1
    dumpe2fs -h "$img" 2>/dev/null | awk -F: '
        $1 == "Block count" { blocks = $2 + 0 }
        $1 == "Free blocks" { free = $2 + 0 }
        $1 == "Block size" { size = $2 + 0 }
        $1 == "Filesystem features" { type = ($2 ~ /extent/) ? "ext4" : ($2 ~ /has_journal/) ? "ext3" : "ext2" }
        END {
            if (!blocks) exit 1
            printf "%d %d %d %s\n", free * size / 1048576, (blocks - free) * size / 1048576, blocks * size / 1048576, type
        }'
}

chroot_image_summary() {
    local img=$1 free used total type
    read -r free used total type < <(chroot_image_space "$img") || chroot_image_die "$img holds no ext file system"
    echo "$img: $total MB, $type, $used MB used, $free MB free"
}

# A `docker export` tarball (TAR) to IMG, unpacked into TREE (an empty folder the caller removes;
# run as root, so that owners and device nodes are kept). SIZE_MB defaults to the sizing rule.
chroot_image_from_tar() {
    local tar_file=$1 tree=$2 img=$3 buffer_mb=${4:-50} size_mb=${5:-} fs_type=${6:-ext4}
    [ -f "$tar_file" ] || chroot_image_die "no tarball $tar_file"
    mkdir -p "$tree"
    tar -xpf "$tar_file" -C "$tree" --numeric-owner
    local min_mb
    min_mb=$(chroot_image_size_mb "$tree" "$buffer_mb")
    if [ -z "$size_mb" ]; then
        size_mb=$min_mb
    elif [ "$size_mb" -lt "$min_mb" ]; then
        echo "warning: $size_mb MB is less than the $min_mb MB the sizing rule gives" >&2
    fi
    echo "Writing $img ($size_mb MB, $fs_type) from $tar_file" >&2
    chroot_image_write "$tree" "$img" "$size_mb" "$fs_type"
}
