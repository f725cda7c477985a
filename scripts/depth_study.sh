#!/usr/bin/env bash
# The CIFAR-10 depth study (issue 10), run through the product as a user would: `resnet serve` on
# the embedded default, the CIFAR-10 archive registered as a folder dataset, one POST
# /v1/experiments. Runs at the lowest CPU priority; results are collected afterwards with
# scripts/collect_depth_study.sh.
#   STUDY_DIR=/work/study-run scripts/depth_study.sh [ARCHIVE]
# With RESNET_BROKER_URL=redis://... the runs are taken in the order posted (the embedded
# filesystem broker does not promise an order). STUDY_ARCHS (comma-separated) posts a subset, e.g.
# STUDY_ARCHS=resnet32,resnet44 to finish a study a session could not.
set -euo pipefail
ARCHIVE=${1:-../shared/datasets/cifar10-jpeg.tar.gz}
STUDY_DIR=${STUDY_DIR:-var-study}
PORT=${RESNET_PORT:-8765}
export RESNET_STATE_DIR=$STUDY_DIR/var RESNET_PORT=$PORT
# The study may be paused (SIGSTOP) while benchmarks run beside it: no heartbeat may go stale.
export RESNET_STALE_AFTER_SECONDS=${RESNET_STALE_AFTER_SECONDS:-86400}
mkdir -p "$RESNET_STATE_DIR/data"
[ -d "$RESNET_STATE_DIR/data/cifar10-jpeg" ] || tar -xzf "$ARCHIVE" -C "$RESNET_STATE_DIR/data"
source "$(dirname "$0")/_venv.sh"
nice -n 19 resnet serve > "$STUDY_DIR/serve.log" 2>&1 &
for _ in $(seq 120); do
  grep -q rsk_ "$STUDY_DIR/serve.log" && curl -sf "localhost:$PORT/healthz" > /dev/null && break
  sleep 2
done
KEY=$(grep -o 'rsk_[A-Za-z0-9_-]*' "$STUDY_DIR/serve.log" | head -1)
echo "$KEY" > "$STUDY_DIR/key"
H=(-sf -H "Authorization: Bearer $KEY" -H 'content-type: application/json')
curl "${H[@]}" -d '{"name": "cifar10", "kind": "folder", "path": "cifar10-jpeg"}' \
  "localhost:$PORT/v1/datasets" > /dev/null
# Most telling runs first: the plain pair (does plain-56 degrade?), then residual at 56 and 20.
ARCHS=${STUDY_ARCHS:-plain20,plain56,resnet56,resnet20,resnet32,resnet44}
ARCHS_JSON=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1].split(",")))' "$ARCHS")
curl "${H[@]}" -d '{"name": "depth-study-cifar10",
  "architectures": '"$ARCHS_JSON"',
  "seeds": [0], "base": {"dataset": "cifar10", "preset": "cifar-fast", "epochs": 10}}' \
  "localhost:$PORT/v1/experiments" > "$STUDY_DIR/experiment.json"
python3 -c "import json,sys; print('experiment', json.load(open(sys.argv[1]))['id'])" \
  "$STUDY_DIR/experiment.json"
