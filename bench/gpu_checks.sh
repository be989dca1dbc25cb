#!/usr/bin/env bash
# The GPU checks of the spiral path in one run, on a machine with a CUDA GPU and CuPy (run by hand;
# CI has no GPU): the tests that take the GPU path there, the per-step profile of a frame (with the
# CUDA-graph frame against the step-by-step one) and the spiral bench with its socket sessions.
#
#   bench/gpu_checks.sh [OUT_DIR]        (default: $OUT, else bench/out/gpu)
#
# Python packages that machine lacks can come as wheels in .whl/ (installed first, into /tmp/site),
# for CPython 3.12 for example:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#       -d .whl ismrmrd==1.15.0 xsdata==26.10 sigpy==0.1.27 PyWavelets==1.9.0
# Each step's output goes to OUT_DIR (tests.txt, profile.txt, bench.txt) and to the terminal; the
# exit status is the number of steps that failed.
set -u
cd "$(dirname "$0")/.." || exit 1
out=${1:-${OUT:-bench/out/gpu}}
mkdir -p "$out"
python=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1
"$python" -c 'import sys; sys.path.insert(0, "modules"); import _backend; sys.exit(_backend.select(0).gpu != 0)' \
    || { echo "no CUDA GPU that CuPy can use here: nothing to check" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$out/device.txt"
failed=0
step() {  # step NAME COMMAND...: run it, keep its output in $out/NAME.txt
    local name=$1
    shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$out/$name.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || failed=$((failed + 1))
}
step tests "$python" -m pytest -q -p no:cacheprovider tests/test_gpu_tables.py tests/test_gpu_frames.py \
    tests/test_spiral_recon.py tests/test_spiral_module.py
step profile "$python" bench/profile_spiral_gpu.py
step bench "$python" bench/bench_spiral.py --gpu 0 --repeats 200
echo "== $failed step(s) failed"
exit "$failed"
