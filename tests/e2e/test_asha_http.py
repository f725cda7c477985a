"""An ASHA search over HTTP with a real worker: a loser stopped early, a winner promoted and
resumed from its checkpoint.

``resnet serve`` (API and one worker, SQLite and the filesystem queue). Two trials of ResNet-8
on a folder of coloured squares, judged by training loss at a rung after epoch 1 of 2, one at a
time (``max_concurrent`` 1). The first trial learns at a sane rate; the second at a rate that
makes its loss blow up, so the verdict does not hang on a close race. The first trial reaches
the rung alone and pauses; the second reaches it, ranks last of two and is stopped early (the
cancel path: ``cancelled``, with the rung and the reason); the first is promoted and a second
delivery resumes it from its epoch-1 checkpoint (epoch 1's record untouched, two attempts).
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.stacks import embedded_stack, write_image_folder

pytestmark = pytest.mark.slow
TERMINAL = {"succeeded", "failed", "cancelled"}


def test_asha_stops_a_loser_early_and_resumes_the_winner(tmp_path):
    with embedded_stack(tmp_path) as stack, stack.client() as api:
        write_image_folder(stack.data_root / "colours", classes=3, per_class=24)
        registered = api.post(
            "/v1/datasets", json={"name": "colours", "kind": "folder", "path": "colours"}
        )
        assert registered.status_code == 201, registered.text
        body = {
            "name": "asha",
            "architectures": ["resnet8"],
            "base": {
                "dataset": "colours", "epochs": 2, "batch_size": 24, "precision": "float32",
                "tensorboard": False, "optimizer": {"name": "sgd", "momentum": 0.9},
                "schedule": {"kind": "constant"},
            },
            "grid": {"schedule.base_lr": [0.05, 10.0]},
            "early_stopping": {
                "rule": "asha", "metric": "loss", "rungs": [1], "reduction_factor": 2,
                "max_concurrent": 1,
            },
        }  # fmt: skip
        rule = {"rule": "asha", "metric": "loss", "rungs": [2]}  # a rung at the budget's end
        bad = api.post("/v1/experiments", json={**body, "early_stopping": rule})
        assert bad.status_code == 422
        assert bad.json()["error"]["details"][0]["field"] == "body.early_stopping.rungs"

        created = api.post("/v1/experiments", json=body)
        assert created.status_code == 202, created.text
        experiment = created.json()
        assert experiment["spec"]["early_stopping"]["rungs"] == [1]
        winner, loser = (c["run_id"] for c in experiment["cells"])
        assert [c["status"] for c in experiment["cells"]] == ["queued", "paused"]

        seen: dict[str, list[str]] = {winner: [], loser: []}
        paused_epochs = None
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            for run_id, statuses in seen.items():
                status = api.get(f"/v1/runs/{run_id}").json()["status"]
                if not statuses or statuses[-1] != status:
                    statuses.append(status)
            if seen[winner][-1] == "paused" and paused_epochs is None:
                paused_epochs = api.get(f"/v1/runs/{winner}/epochs").json()["items"]
            if seen[winner][-1] in TERMINAL and seen[loser][-1] in TERMINAL:
                break
            time.sleep(0.2)
        summary = api.get(f"/v1/experiments/{experiment['id']}").json()
        context = (seen, summary, stack.log_tail(6000))
        assert seen[winner][-1] == "succeeded" and seen[loser][-1] == "cancelled", context

        cells = {c["run_id"]: c for c in summary["cells"]}
        stopped = cells[loser]
        assert stopped["stopped_early"] and stopped["rung"] == 0
        assert stopped["stop_reason"].startswith("stopped early at rung 0 (epoch 1)"), context
        assert [r["decision"] for r in stopped["rungs"]] == ["stopped"]
        promoted = cells[winner]
        assert not promoted["stopped_early"] and promoted["epochs_completed"] == 2
        assert [(r["rung"], r["decision"]) for r in promoted["rungs"]] == [(0, "promoted")]

        # Paused at the rung, then resumed by a second delivery from its checkpoint: epoch 1
        # is the record the first attempt wrote, not a retrained one.
        assert "paused" in seen[winner], context
        assert paused_epochs is not None and [e["epoch"] for e in paused_epochs] == [1]
        run = api.get(f"/v1/runs/{winner}").json()
        assert run["attempts"] == 2, (run, context)
        epochs = api.get(f"/v1/runs/{winner}/epochs").json()["items"]
        assert [e["epoch"] for e in epochs] == [1, 2]
        assert epochs[0] == paused_epochs[0]
        assert summary["status"] == "succeeded"  # a trial stopped early is the search working
