#!/usr/bin/env bash
# Set up fx in .venv (CPU torch) and run a real 2-site federation on 127.0.0.1 over mutual TLS.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# A CPU build of torch unless one is already installed (an unpinned torch pulls CUDA wheels).
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[torch]"
export PATH="$repo/.venv/bin:$PATH"

workdir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
cd "$workdir"
port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

fx workspace create --template torch_cnn_digits --prefix fed --agg-port "$port"
cd fed
fx pki certify
fx aggregator start &
agg=$!
fx collaborator start --name site-1 > logs/site-1.out 2>&1 &
c1=$!
fx collaborator start --name site-2 > logs/site-2.out 2>&1 &
c2=$!
wait "$c1" "$c2"
wait "$agg"
echo
echo "Workspace: $workdir/fed  (models in save/, metrics in logs/metrics.jsonl)"
