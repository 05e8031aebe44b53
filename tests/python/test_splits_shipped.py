"""The shipped copies of upstream's split files are the ones PROVENANCE.md pins (sha256, count)."""

from __future__ import annotations

import hashlib
import re

from mlebench_hpc.competition_sets import SHIPPED_SPLITS, UPSTREAM_SPLITS, read_competition_list

ROW = re.compile(r"^\| (\S+)\.txt \| (\d+) \| [0-9a-f]+ \d{4}-\d\d-\d\d \| ([0-9a-f]{64}) \|$")


def test_every_shipped_split_matches_its_pinned_sha256_and_count() -> None:
    rows = [ROW.match(line) for line in (SHIPPED_SPLITS / "PROVENANCE.md").read_text().splitlines()]
    pinned = {m[1]: (int(m[2]), m[3]) for m in rows if m}
    assert sorted(pinned) == sorted(UPSTREAM_SPLITS)
    assert sorted(p.stem for p in SHIPPED_SPLITS.glob("*.txt")) == sorted(UPSTREAM_SPLITS)
    for name, (count, sha) in pinned.items():
        path = SHIPPED_SPLITS / f"{name}.txt"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, f"{path} differs from upstream's"
        ids, problems = read_competition_list(path)
        assert (len(ids), problems) == (count, [])
    # the sizes: low 22, medium 38, high 15, split75 75 (= low + medium + high)
    low, medium, high, split75 = (
        set(read_competition_list(SHIPPED_SPLITS / f"{n}.txt")[0])
        for n in ("low", "medium", "high", "split75")
    )
    assert (len(low), len(medium), len(high)) == (22, 38, 15) and low | medium | high == split75
