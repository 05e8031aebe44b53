"""Every conformance vector (tests/conformance/vectors/, made by generate.py from upstream's own
graders at upstream's pins) replayed through the built-in backend: same verdict, same value.

Runs under whichever pandas the venv has; tests/run_all.sh runs it under pandas 3 and 2.2.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import pytest
from mlebench_hpc.grading import InvalidSubmission, load_competition
from mlebench_hpc.grading.competitions import get_spec, upstream_specs

VECTORS = Path(__file__).resolve().parent / "vectors"
FILES = sorted(VECTORS.glob("*.json"))


def load(path: Path) -> dict:
    return json.loads(path.read_text("utf-8"))


def submission_bytes(case: dict) -> bytes:
    if "submission_base64" in case:
        return base64.b64decode(case["submission_base64"])
    return case["submission"].encode("utf-8")


@pytest.fixture(autouse=True)
def _builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLEBENCH_HPC_BACKEND", "builtin")
    monkeypatch.delenv("MLEBENCH_DIR", raising=False)


def test_every_builtin_upstream_competition_has_vectors() -> None:
    have = {p.stem for p in FILES}
    assert {s.competition_id for s in upstream_specs()} == have
    assert len(have) == 23


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_vectors_equal_upstream(path: Path, tmp_path: Path) -> None:
    doc = load(path)
    cid = doc["competition_id"]
    spec = get_spec(cid)
    assert spec is not None, f"{cid} is not built in"
    assert doc["answers_file"] == spec.answers_file
    private = tmp_path / cid / "prepared" / "private"
    private.mkdir(parents=True)
    (private / doc["answers_file"]).write_bytes(doc["answers"].encode("utf-8"))
    comp = load_competition(cid, tmp_path)
    sub = tmp_path / "submission.csv"
    wrong = []
    for case in doc["cases"]:
        sub.write_bytes(submission_bytes(case))
        want = case["upstream"]
        valid, message = comp.validate(sub)
        assert message.count("\n") <= 1, f"{case['name']}: message is more than one line"
        if valid != want["valid"]:
            wrong.append(
                f"{case['name']}: upstream valid={want['valid']} ({want.get('error')}), ours {message!r}"
            )
            continue
        if not valid:
            with pytest.raises(InvalidSubmission):
                comp.score(sub)
            continue
        got = comp.score(sub)
        if want.get("score_is_nan"):
            if not math.isnan(got):
                wrong.append(f"{case['name']}: upstream NaN, ours {got}")
        elif not abs(got - want["score"]) <= 1e-9:
            wrong.append(f"{case['name']}: upstream {want['score']}, ours {got}")
    assert not wrong, f"{cid}: {len(wrong)} of {len(doc['cases'])} cases differ:\n" + "\n".join(wrong)
