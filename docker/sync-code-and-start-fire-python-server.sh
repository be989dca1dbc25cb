#!/usr/bin/env bash
# Development helper (the script in FIRE's default fire.ini): copy $MRD_SHARE_DIR/code/*
# (FIRE host: %CustomerIceProgs%\fire\share\code\) over $MRD_SERVER_DIR (recursive, forced),
# then start the server like start-fire-python-server.sh.
#
#   sync-code-and-start-fire-python-server.sh [LOGFILE]
#
# Environment: as start-fire-python-server.sh (MRD_SERVER_DIR, MRD_SHARE_DIR, MRD_PORT, PYTHON).
# Nothing to copy (no code folder, or an empty one) is reported and the server starts anyway.
set -eu

# The code is the folder above this script (followed through links, e.g. the copies at the top of
# /opt/code/python-ismrmrd-server that upstream's fire.ini files name).
MRD_SERVER_DIR=${MRD_SERVER_DIR:-$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)}
MRD_SHARE_DIR=${MRD_SHARE_DIR:-/tmp/share}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

shopt -s nullglob
sources=("$MRD_SHARE_DIR"/code/*)
shopt -u nullglob
if [ "${#sources[@]}" -gt 0 ]; then
    cp -rf "${sources[@]}" "$MRD_SERVER_DIR"/
    echo "Copied ${#sources[@]} item(s) from $MRD_SHARE_DIR/code to $MRD_SERVER_DIR" >&2
else
    echo "Nothing to copy from $MRD_SHARE_DIR/code" >&2
fi

exec "$here/start-fire-python-server.sh" "${1:-}"
