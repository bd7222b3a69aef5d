#!/bin/sh
# GPU readiness benchmark (docs in benchmarks/gpu.py): install the wheels carried in .whl/ (if any) into /tmp/site, then run from the repo root with nanocode on PYTHONPATH; extra arguments go to gpu.py.
cd "$(dirname "$0")/.." && { [ -z "$(ls .whl/*.whl 2>/dev/null)" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl; } && PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 exec python3 benchmarks/gpu.py --out "${OUT:-benchmarks}" "$@"
