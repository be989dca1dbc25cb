#!/usr/bin/env bash
# Like start-fire-python-server.sh, and every session's incoming data is saved to
# $MRD_SHARE_DIR/saved_data (FIRE host: %CustomerIceProgs%\fire\share\saved_data).
#
#   start-fire-python-server-with-data-storage.sh [LOGFILE]
#
# Environment: as start-fire-python-server.sh (MRD_SERVER_DIR, MRD_SHARE_DIR, MRD_PORT, PYTHON).
set -eu

MRD_SHARE_DIR=${MRD_SHARE_DIR:-/tmp/share}
case $MRD_SHARE_DIR in
    /*) ;;
    *) MRD_SHARE_DIR=$PWD/$MRD_SHARE_DIR ;;
esac
export MRD_SHARE_DIR
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

exec "$here/start-fire-python-server.sh" "${1:-}" -s -S "$MRD_SHARE_DIR/saved_data"
