#!/usr/bin/env bash
# Collect the depth study's records from a running service into docs/ (issue 10): the Table 1
# JSON and Markdown, each run's per-epoch history, the figures, and the reproducibility bundle.
# Usage: scripts/collect_depth_study.sh URL KEY EXPERIMENT_ID OUT_DIR (e.g. docs)
set -euo pipefail
URL=$1 KEY=$2 EXP=$3 OUT=$4
mkdir -p "$OUT/results" "$OUT/figures"
H=(-sf -H "Authorization: Bearer $KEY")
curl "${H[@]}" "$URL/v1/reports/table1?experiment=$EXP" > /tmp/table1.json
curl "${H[@]}" "$URL/v1/reports/table1?experiment=$EXP&format=md" > "$OUT/results/depth_study_table1.md"
curl "${H[@]}" "$URL/v1/experiments/$EXP" > /tmp/experiment.json
python3 - "$URL" "$KEY" "$OUT" <<'PY'
import json, sys, urllib.request
url, key, out = sys.argv[1:4]
def get(path):
    req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)
experiment = json.load(open("/tmp/experiment.json"))
runs = {}
for cell in experiment["cells"]:
    rid = cell["run_id"]
    run = get(f"/v1/runs/{rid}")
    epochs = get(f"/v1/runs/{rid}/epochs")
    runs[rid] = {"run": run, "epochs": epochs.get("items", epochs)}
result = {"experiment": experiment, "table1": json.load(open("/tmp/table1.json")), "runs": runs}
json.dump(result, open(f"{out}/results/depth_study.json", "w"), indent=1, sort_keys=True)
PY
for kind in training_time_vs_depth error_vs_depth plain_vs_residual curves throughput; do
  curl "${H[@]}" "$URL/v1/figures/$kind.png?experiment=$EXP" > "$OUT/figures/depth_study_$kind.png" || echo "no $kind"
done
curl "${H[@]}" "$URL/v1/experiments/$EXP/bundle" > "$OUT/results/depth_study_bundle.zip"
