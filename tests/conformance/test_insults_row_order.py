"""detecting-insults-in-social-commentary: the id is the comment text, and comments repeat.

Upstream sorts submission and answers by comment with pandas' default quicksort, which is not
stable: rows with the same comment pair up in an order that depends on the whole input, so the
score of the same predictions changes with the row order of the file. The built-in backend sorts
with the same numpy quicksort on the same object arrays, so it reproduces every order exactly.
This test shows how much the order matters and that no order in the vectors is irreproducible;
if a numpy release changed its object quicksort, it would list which orders differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlebench_hpc.grading import load_competition

CID = "detecting-insults-in-social-commentary"
DOC = json.loads((Path(__file__).resolve().parent / "vectors" / f"{CID}.json").read_text("utf-8"))
ORDERS = [
    c for c in DOC["cases"] if c["name"] in ("well_formed", "reversed_rows") or "shuffled_rows" in c["name"]
]


def test_same_predictions_in_other_row_orders_score_as_upstream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLEBENCH_HPC_BACKEND", "builtin")
    private = tmp_path / CID / "prepared" / "private"
    private.mkdir(parents=True)
    (private / "test.csv").write_text(DOC["answers"], encoding="utf-8")
    comp = load_competition(CID, tmp_path)
    upstream = {c["name"]: c["upstream"]["score"] for c in ORDERS}
    ours = {}
    for case in ORDERS:
        path = tmp_path / "submission.csv"
        path.write_text(case["submission"], encoding="utf-8")
        ours[case["name"]] = comp.score(path)
    # the answers repeat comments with different labels, so the order matters upstream...
    assert len(ORDERS) >= 14 and len(set(upstream.values())) >= 5
    # ...and every order is reproduced exactly: 0 of len(ORDERS) differ
    differ = sorted(name for name in upstream if abs(ours[name] - upstream[name]) > 1e-9)
    assert differ == [], f"{len(differ)} of {len(ORDERS)} row orders not reproduced: {differ}"
