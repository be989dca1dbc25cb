#!/usr/bin/env bash
# Runs a command with its writes to one disk throttled to a set speed, as on a slower disk (run by
# hand, as root): the block-I/O throttle of a cgroup of its own, cgroup v2 (io.max) or v1 (blkio).
# What is throttled is the writing the command's processes submit, which includes their fsync's
# writeback; a page-cache write is not delayed until it reaches the disk.
#
#   bench/slow_disk.sh MB_PER_S FOLDER COMMAND...
#   bench/slow_disk.sh 500 /tmp .venv/bin/python bench/bench_save.py --repeats 5
#
# FOLDER names the disk (the one that holds it; a partition's whole disk). The cgroup
# (mrd-slow-disk) is removed afterwards; the exit status is the command's.
set -eu
if [ $# -lt 3 ]; then
    sed -n '2,12p' "$0" >&2
    exit 2
fi
mbps=$1 folder=$2
shift 2
source=$(findmnt -n -o SOURCE --target "$folder")
[ -b "$source" ] || { echo "$folder is not on a block device (its file system: $source)" >&2; exit 2; }
disk=$(lsblk -n -o PKNAME "$source" 2>/dev/null | head -n 1)
device=$(lsblk -n -d -o MAJ:MIN "/dev/${disk:-${source#/dev/}}" | tr -d ' ')
limit=$((mbps * 1000000))
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then  # cgroup v2
    root=/sys/fs/cgroup
    grep -qw io "$root/cgroup.subtree_control" || echo +io >"$root/cgroup.subtree_control"
    group=$root/mrd-slow-disk
    mkdir -p "$group"
    echo "$device wbps=$limit" >"$group/io.max"
else  # cgroup v1
    group=/sys/fs/cgroup/blkio/mrd-slow-disk
    mkdir -p "$group"
    echo "$device $limit" >"$group/blkio.throttle.write_bps_device"
fi
echo "writes to $device (holding $folder) throttled to $mbps MB/s" >&2
status=0
sh -c 'echo $$ >"$1/cgroup.procs"; shift; exec "$@"' sh "$group" "$@" || status=$?
rmdir "$group" 2>/dev/null || true
exit "$status"
