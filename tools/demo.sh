#!/usr/bin/env bash
# End-to-end demo: phantom -> server (background) -> client with simplefft -> PNG preview -> server stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PORT=${PORT:-9002}
mkdir -p demo
rm -f demo/out.h5

"$PYTHON" tools/generate_cartesian_shepp_logan_dataset.py -o demo/phantom.h5 -m 256 -c 8 -r 1
"$PYTHON" main.py -v -p "$PORT" -l demo/server.log > /dev/null &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    "$PYTHON" -c "import socket,sys; socket.create_connection(('127.0.0.1', $PORT), 0.2).close()" 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || { echo "server failed to start, see demo/server.log" >&2; exit 1; }
    sleep 0.1
done
"$PYTHON" client.py -p "$PORT" -c simplefft -G demo -o demo/out.h5 demo/phantom.h5
"$PYTHON" tools/mrd2gif.py demo/out.h5 -g demo --filetype png
echo "Demo done: images in demo/out.h5 (group demo), preview: $(ls demo/*.png)"
