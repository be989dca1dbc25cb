#!/usr/bin/env bash
# Start the MRD server in the background, as Siemens FIRE's chroot_command expects, and return.
#
#   start-fire-python-server.sh [LOGFILE [EXTRA MAIN.PY FLAGS...]]
#
# Runs  $PYTHON $MRD_SERVER_DIR/main.py -v -r -H=0.0.0.0 -p=$MRD_PORT [-l=LOGFILE] [EXTRA...]
# under nohup with stdin from /dev/null, prints the server's PID on stdout and exits 0.
# The server's working directory is MRD_SERVER_DIR (as in the Docker image); a relative
# LOGFILE is taken relative to the caller's directory. An empty LOGFILE means no log file
# (the other start scripts pass their flags this way).
#
# Environment (FIRE defaults):
#   MRD_SERVER_DIR   the folder above docker/ (in the image /opt/code/python-ismrmrd-server): main.py's folder
#   MRD_SHARE_DIR    /tmp/share             FIRE's shared folder; also TMPDIR of the server
#   MRD_PORT         9002                   TCP port
#   PYTHON           python3                interpreter (command name or path)
#   MRD_CONSOLE_LOG  $MRD_SHARE_DIR/mrd-server-console.log
#                    receives the server's stderr (start-up failures), and its stdout when no
#                    LOGFILE is given (with a LOGFILE every log line is in that file already)
set -eu

# The code is the folder above this script (followed through links, e.g. the copies at the top of
# /opt/code/python-ismrmrd-server that upstream's fire.ini files name).
MRD_SERVER_DIR=${MRD_SERVER_DIR:-$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)}
MRD_SHARE_DIR=${MRD_SHARE_DIR:-/tmp/share}
MRD_PORT=${MRD_PORT:-9002}
PYTHON=${PYTHON:-python3}
MRD_CONSOLE_LOG=${MRD_CONSOLE_LOG:-$MRD_SHARE_DIR/mrd-server-console.log}

logfile=${1:-}
if [ "$#" -gt 0 ]; then
    shift
fi

# The server starts in MRD_SERVER_DIR: make the caller's relative paths absolute first.
case $logfile in
    "" | /*) ;;
    *) logfile=$PWD/$logfile ;;
esac
case $PYTHON in
    /*) ;;
    */*) PYTHON=$PWD/$PYTHON ;;
esac
mkdir -p "$MRD_SHARE_DIR" "$(dirname "$MRD_CONSOLE_LOG")"
MRD_CONSOLE_LOG=$(cd "$(dirname "$MRD_CONSOLE_LOG")" && pwd)/$(basename "$MRD_CONSOLE_LOG")
MRD_SHARE_DIR=$(cd "$MRD_SHARE_DIR" && pwd)
MRD_SERVER_DIR=$(cd "$MRD_SERVER_DIR" && pwd)
export TMPDIR=$MRD_SHARE_DIR

cmd=("$PYTHON" "$MRD_SERVER_DIR/main.py" -v -r -H=0.0.0.0 "-p=$MRD_PORT")
if [ -n "$logfile" ]; then
    cmd+=("-l=$logfile")
    stdout_target=/dev/null
else
    stdout_target=$MRD_CONSOLE_LOG
fi
cmd+=("$@")

cd "$MRD_SERVER_DIR"
nohup "${cmd[@]}" </dev/null >>"$stdout_target" 2>>"$MRD_CONSOLE_LOG" &
pid=$!
echo "Started the MRD server in the background (pid $pid): ${cmd[*]}" >&2
echo "$pid"
