#!/usr/bin/env bash
# Build a Siemens FIRE chroot image of the MRD server without Docker: a Debian root made with
# debootstrap, the project and its Python packages installed into it, written to an ext4 image
# file with `mke2fs -d` (no loop device, no mount of the image).
#
#   sudo tools/build_chroot.sh [--out DIR] [--name FILE.img] [--size MB] [--buffer MB]
#                              [--fs-type ext4|ext3] [--suite SUITE] [--mirror URL]
#                              [--cache-dir DIR] [--git-ref REF] [--keep-root]
#
#   --out DIR        where the image, its manifest and (--keep-root) the root folder go
#                    (default: build/chroot in the repository)
#   --name FILE.img  image file name (default: mrd-server-chroot.img)
#   --size MB        image size; default: the content + 15 % + the buffer, rounded up to a whole
#                    100 MB (the rule of python-ismrmrd-server's docker_tar_to_chroot.sh)
#   --buffer MB      free space the default size leaves at least (default: 50, as upstream)
#   --fs-type T      ext4 (default) or ext3 (what python-ismrmrd-server's scripts write, for an image
#                    identical in kind to upstream's)
#   --suite SUITE    Debian release (default: bookworm, Python 3.11)
#   --mirror URL     Debian mirror (default: http://deb.debian.org/debian)
#   --cache-dir DIR  keeps the debootstrap package tarball and the Python wheels, so that a rebuild
#                    downloads nothing (default: $XDG_CACHE_HOME/mrd-server-chroot, else
#                    ~/.cache/mrd-server-chroot; delete an entry there to refresh it)
#   --git-ref REF    install the files of commit REF (git archive) instead of the working tree's
#                    tracked files
#   --keep-root      keep the root folder (DIR/root) after writing the image (tests run in it)
#
# Layout inside the root, as in python-ismrmrd-server's images:
#   /opt/code/python-ismrmrd-server/       the code (tracked files without tests/, bench/, .ci/,
#                                          .devcontainer/), bytecode compiled; the three FIRE start
#                                          scripts at its top as links to docker/<script>
#   /opt/code/mrd-server -> python-ismrmrd-server
#   /usr/bin/python3 (Debian's) with the [project].dependencies of pyproject.toml from PyPI (pip),
#   Debian's bart and ismrmrd-tools.
# Next to the image: FILE.img.manifest (source commit, Debian and Python package versions).
#
# Needs root (debootstrap, chroot), debootstrap and e2fsprogs (make chroot-test installs them),
# and network access to the mirror and PyPI unless the cache holds everything.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
# shellcheck source=tools/_chroot_image.sh
source "$here/_chroot_image.sh"

out=$repo/build/chroot
name=mrd-server-chroot.img
size_mb=
buffer_mb=50
fs_type=ext4
suite=bookworm
mirror=http://deb.debian.org/debian
cache_dir=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/mrd-server-chroot
git_ref=
keep_root=0

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit "${1:-2}"
}

while [ "$#" -gt 0 ]; do
    case $1 in
        --out) out=${2:?--out needs a folder}; shift 2 ;;
        --name) name=${2:?--name needs a file name}; shift 2 ;;
        --size) size_mb=${2:?--size needs MB}; shift 2 ;;
        --buffer) buffer_mb=${2:?--buffer needs MB}; shift 2 ;;
        --fs-type) fs_type=${2:?--fs-type needs ext4 or ext3}; shift 2 ;;
        --suite) suite=${2:?--suite needs a release name}; shift 2 ;;
        --mirror) mirror=${2:?--mirror needs a URL}; shift 2 ;;
        --cache-dir) cache_dir=${2:?--cache-dir needs a folder}; shift 2 ;;
        --git-ref) git_ref=${2:?--git-ref needs a commit}; shift 2 ;;
        --keep-root) keep_root=1; shift ;;
        -h | --help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
done
case $size_mb$buffer_mb in
    *[!0-9]*) chroot_image_die "--size and --buffer take whole MB" ;;
esac
case $name in
    */* | '') chroot_image_die "--name is a file name, not a path: $name" ;;
esac

[ "$(id -u)" = 0 ] || chroot_image_die "debootstrap and chroot need root: run with sudo"
for tool in debootstrap mke2fs dumpe2fs chroot; do
    command -v "$tool" >/dev/null || chroot_image_die "$tool not found (apt-get install debootstrap e2fsprogs)"
done

# Debian packages besides minbase: the interpreter and pip (PyPI packages), certificates (HTTPS to
# PyPI), BART (modules that call it), the ISMRMRD tools (phantom generator, converters).
packages=python3,python3-pip,ca-certificates,bart,ismrmrd-tools
arch=$(dpkg --print-architecture)
mkdir -p "$out" "$cache_dir"
out=$(cd "$out" && pwd)
cache_dir=$(cd "$cache_dir" && pwd)
root=$out/root
img=$out/$name
python_env=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
            PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_BREAK_SYSTEM_PACKAGES=1
            PIP_NO_CACHE_DIR=1)

log() { echo "== $*" >&2; }

# Mount points under the root, deepest first (debootstrap mounts /proc and /sys while it installs).
mounts_under() {
    awk -v root="$1" '$2 == root || index($2, root "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}
unmount_under() {
    local point
    for point in $(mounts_under "$1"); do
        umount "$point" 2>/dev/null || umount -l "$point"
    done
}
# A root folder is removed only when this script made it (its marker is next to it): --out / must
# never mean rm -rf /root.
marker=$out/.root-made-by-build_chroot
remove_root() {
    if [ -e "$root" ] || [ -L "$root" ]; then
        [ -f "$marker" ] || chroot_image_die "$root exists and was not made by build_chroot.sh; not removing it"
    fi
    unmount_under "$root"
    if [ -n "$(mounts_under "$root")" ]; then
        chroot_image_die "something is still mounted under $root; not removing it"
    fi
    rm -rf --one-file-system "$root"
    rm -f "$marker"
}
cleanup() {
    local rc=$?
    [ -d "$root" ] && unmount_under "$root"
    if [ "$rc" != 0 ] && [ -f "$marker" ]; then
        echo "build_chroot.sh failed (exit $rc); the root so far is in $root" >&2
    fi
}
trap cleanup EXIT

in_root() { chroot "$root" "${python_env[@]}" "$@"; }

# --- 1. Debian root (debootstrap, from a cached package tarball) -----------------------------------
key=$(printf '%s\n' "$suite" "$arch" minbase "$packages" | sha256sum | cut -c1-12)
tarball=$cache_dir/debootstrap-$suite-$arch-$key.tar.gz
debootstrap_args=(--variant=minbase --arch="$arch" --include="$packages" --components=main)
if [ ! -s "$tarball" ]; then
    log "Downloading the Debian $suite packages into $tarball ($mirror)"
    scratch=$(mktemp -d "$cache_dir/.make-tarball.XXXXXX")
    partial=$cache_dir/.partial-$(basename "$tarball")
    debootstrap "${debootstrap_args[@]}" --make-tarball="$partial" "$suite" "$scratch" "$mirror" >&2
    rm -rf "$scratch"
    mv -f "$partial" "$tarball"
fi
log "Debian $suite root in $root"
remove_root
touch "$marker"
debootstrap "${debootstrap_args[@]}" --unpack-tarball="$tarball" "$suite" "$root" "$mirror" >&2
unmount_under "$root"
[ -c "$root/dev/null" ] || chroot_image_die "debootstrap left no /dev/null in the root"

# --- 2. the project --------------------------------------------------------------------------------
code=$root/opt/code/python-ismrmrd-server
mkdir -p "$code"
excluded='^(tests|bench|\.ci|\.devcontainer)/|^\.git'
if [ -n "$git_ref" ]; then
    log "Project files of $git_ref"
    source_id=$(git -C "$repo" rev-parse --verify "$git_ref^{commit}")
    git -C "$repo" archive --format=tar "$source_id" | tar -xf - -C "$code"
    git -C "$repo" ls-tree -r --name-only "$source_id" | grep -E "$excluded" | (cd "$code" && xargs -r -d '\n' rm -f)
    find "$code" -depth -type d -empty -delete
elif git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    log "Project files: the working tree's tracked files"
    source_id=$(git -C "$repo" describe --always --dirty --abbrev=40)
    (cd "$repo" && git ls-files -z | tr '\0' '\n' | grep -Ev "$excluded" | while IFS= read -r f; do
        [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"
    done | tar --null --no-recursion -T - -cf -) | tar -xf - -C "$code"
else
    log "Project files: the folder (not a git checkout)"
    source_id="folder $repo"
    tar -C "$repo" --exclude=./.git --exclude=./.venv --exclude=./tests --exclude=./bench --exclude=./build \
        --exclude=__pycache__ --exclude='*.pyc' --exclude='*.h5' -cf - . | tar -xf - -C "$code"
fi
chown -R 0:0 "$code"
[ -f "$code/main.py" ] || chroot_image_die "no main.py in the project files"
ln -sfn python-ismrmrd-server "$root/opt/code/mrd-server"
for script in start-fire-python-server.sh start-fire-python-server-with-data-storage.sh \
        sync-code-and-start-fire-python-server.sh; do
    [ -x "$code/docker/$script" ] || chroot_image_die "docker/$script is missing or not executable"
    if [ ! -e "$code/$script" ] || [ -L "$code/$script" ]; then
        ln -sfn "docker/$script" "$code/$script"
    fi
done

# --- 3. Python packages (pip in the root, wheels cached) ------------------------------------------
log "Python packages of pyproject.toml"
if [ -f /etc/resolv.conf ]; then
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
fi
in_root python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/opt/code/python-ismrmrd-server/pyproject.toml', 'rb'))['project']['dependencies']))" \
    >"$root/tmp/requirements.txt"
python_tag=$(in_root python3 -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
wheels=$cache_dir/wheels-$suite-$arch-$python_tag
mkdir -p "$wheels" "$root/tmp/wheels"
cp -a "$wheels/." "$root/tmp/wheels/"
pip_install=(python3 -m pip install --no-warn-script-location --prefer-binary)
if ! in_root "${pip_install[@]}" --no-index --find-links /tmp/wheels -r /tmp/requirements.txt >/dev/null 2>&1; then
    log "Downloading Python packages from PyPI (cached in $wheels)"
    # The download trusts what this machine trusts (its CA bundle: TLS-inspecting proxies) and goes
    # through its proxy and package index settings; none of them stays in the root.
    download_env=()
    host_ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
    if [ -f "$host_ca" ]; then
        cp -L "$host_ca" "$root/tmp/build-ca.crt"
        download_env+=(PIP_CERT=/tmp/build-ca.crt)
    fi
    for var in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY PIP_INDEX_URL PIP_DEFAULT_TIMEOUT; do
        if [ -n "${!var:-}" ]; then
            download_env+=("$var=${!var}")
        fi
    done
    python_env+=("${download_env[@]}")
    in_root python3 -m pip download --prefer-binary --dest /tmp/wheels -r /tmp/requirements.txt >&2
    in_root "${pip_install[@]}" --no-index --find-links /tmp/wheels -r /tmp/requirements.txt >&2
    cp -a "$root/tmp/wheels/." "$wheels/"
fi
in_root python3 -m pip check >&2
in_root python3 -c 'import numpy, scipy, h5py, ismrmrd, matplotlib, PIL, pydicom, tqdm'
in_root python3 /opt/code/python-ismrmrd-server/main.py --help >/dev/null
in_root bart version >/dev/null
in_root python3 -m compileall -q /opt/code/python-ismrmrd-server

# --- 4. manifest, clean-up ---------------------------------------------------------------------------
{
    echo "# $name: MRD server FIRE chroot image, built by tools/build_chroot.sh"
    echo "source: $source_id"
    echo "debian: $suite $arch ($mirror), debootstrap --variant=minbase --include=$packages"
    echo "debootstrap tarball: $(basename "$tarball") sha256 $(sha256sum "$tarball" | cut -d' ' -f1)"
    echo "# Debian packages"
    # shellcheck disable=SC2016  # dpkg-query's own format fields
    in_root dpkg-query -W -f '${Package} ${Version}\n'
    echo "# Python packages (pip)"
    in_root python3 -m pip freeze --all
} >"$img.manifest"
rm -rf "$root/tmp/wheels" "$root/tmp/requirements.txt" "$root/tmp/build-ca.crt"
: >"$root/etc/resolv.conf"
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
    "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/root/.cache \
    "$root"/var/cache/debconf/*-old "$root"/tmp/*

# --- 5. the image -------------------------------------------------------------------------------------
min_mb=$(chroot_image_size_mb "$root" "$buffer_mb")
if [ -z "$size_mb" ]; then
    size_mb=$min_mb
elif [ "$size_mb" -lt "$min_mb" ]; then
    echo "warning: --size $size_mb is less than the $min_mb MB the sizing rule gives" >&2
fi
log "Writing $img ($size_mb MB, $fs_type; root content $(chroot_image_content_mb "$root") MB)"
chroot_image_write "$root" "$img" "$size_mb" "$fs_type"
chroot_image_summary "$img"
if [ "$keep_root" = 1 ]; then
    echo "root folder kept: $root" >&2
else
    remove_root
fi
