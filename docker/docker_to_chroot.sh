#!/usr/bin/env bash
# Make a Siemens FIRE chroot image (.img) from a Docker image: `docker create` + `docker export`
# into a folder, then the image-writing step of tools/build_chroot.sh (an ext4 file system written
# with `mke2fs -d`: no privileged container, no loop mount).
#
#   docker/docker_to_chroot.sh [--size MB] [--fs-type ext4|ext3] DOCKER_IMAGE OUT.img [BUFFER_MB]
#
#   DOCKER_IMAGE  an existing image, e.g. mrd-server (docker build -f docker/Dockerfile -t mrd-server .)
#   OUT.img       the chroot image to write (replaced if it exists)
#   BUFFER_MB     free space the image keeps at least (default 50), as the third argument of
#                 python-ismrmrd-server's docker_to_chroot.sh; the size is the content + 15 % + the
#                 buffer, rounded up to a whole 100 MB
#   --size MB     an explicit image size instead
#   --fs-type T   ext4 (default) or ext3 (as upstream's images)
#
# Run it as root, or as a user of the docker group under fakeroot (it re-runs itself under
# fakeroot when that is installed), so that the unpacked files keep their owners. The export is
# unpacked next to OUT.img and removed afterwards, as is the temporary container.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools/_chroot_image.sh
source "$here/../tools/_chroot_image.sh"

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit "${1:-2}"
}

all_args=("$@")
size_mb=
fs_type=ext4
args=()
while [ "$#" -gt 0 ]; do
    case $1 in
        --size) size_mb=${2:?--size needs MB}; shift 2 ;;
        --fs-type) fs_type=${2:?--fs-type needs ext4 or ext3}; shift 2 ;;
        -h | --help) usage 0 ;;
        --) shift; args+=("$@"); break ;;
        -*) echo "unknown option: $1" >&2; usage 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
if [ "${#args[@]}" -lt 2 ] || [ "${#args[@]}" -gt 3 ]; then
    echo "expected DOCKER_IMAGE OUT.img [BUFFER_MB]" >&2
    usage 2
fi
docker_image=${args[0]}
out=${args[1]}
buffer_mb=${args[2]:-50}
case $buffer_mb$size_mb in
    *[!0-9]*) chroot_image_die "BUFFER_MB and --size take whole MB" ;;
esac
command -v docker >/dev/null || chroot_image_die "docker not found"

if [ "$(id -u)" != 0 ]; then
    if command -v fakeroot >/dev/null && [ -z "${FAKEROOTKEY:-}" ]; then
        exec fakeroot -- "${BASH_SOURCE[0]}" "${all_args[@]}"
    fi
    [ -n "${FAKEROOTKEY:-}" ] || chroot_image_die "run as root or under fakeroot, so that the files keep their owners"
fi

mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
work=$(mktemp -d "$(dirname "$out")/.docker_to_chroot.XXXXXX")
container=
cleanup() {
    if [ -n "$container" ]; then
        docker rm "$container" >/dev/null || echo "warning: could not remove container $container" >&2
    fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "== Exporting Docker image $docker_image" >&2
name=docker-to-chroot-$$-$RANDOM
docker create --name "$name" "$docker_image" >/dev/null
container=$name
docker export -o "$work/export.tar" "$container"
docker rm "$container" >/dev/null
container=

chroot_image_from_tar "$work/export.tar" "$work/tree" "$out" "$buffer_mb" "$size_mb" "$fs_type"
found=
for script in /opt/code/python-ismrmrd-server/start-fire-python-server.sh /opt/code/mrd-server/start-fire-python-server.sh \
        /opt/code/mrd-server/docker/start-fire-python-server.sh; do
    if [ -e "$work/tree$script" ] || [ -L "$work/tree$script" ]; then
        found=$script
        break
    fi
done
if [ -n "$found" ]; then
    echo "FIRE start script in the image: $found" >&2
else
    echo "warning: the image holds no start-fire-python-server.sh under /opt/code; fire.ini's chroot_command must name a command it has" >&2
fi
chroot_image_summary "$out"
