"""The leaderboard row and report.html, on a real graded group, checked in headless Chromium.

The group is graded by the real CLI (demo data, 2 competitions x 3 seeds). Then the test sets
`aggregates` and `cost` in its grading_report.json to what a demo group graded without Slurm cannot
have (an upstream split, a split with an error, sacct costs and hardware), worked by hand from the
graded runs, and writes the summaries again from the file.

Chromium (Debian's package) runs as the test user when the test runs as root (its sandbox on,
no --no-sandbox), else as whoever runs the test. tests/run_all.sh installs it as the site admin
and sets MLEBENCH_REQUIRE_CHROMIUM=1: then a missing chromium is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlebench_hpc.results.leaderboard import leaderboard_rows
from mlebench_hpc.results.report import CompetitionReport
from mlebench_hpc.results.report_html import render_report_html
from mlebench_hpc.results.summary import write_summaries
from report_page import browse, parse, rows

CLI = str(Path(sys.executable).parent / "mlebench-hpc")
TEST_USER = os.environ.get("MH_TEST_AGENT_USER", "mhagent")
PWNED = "PWNED"
# Agent-written strings: markup, an attribute breaking out of its quotes, terminal escapes, a link.
SCRIPT = f"<script>document.title='{PWNED}1';document.body.id='{PWNED}'</script>"
ATTR = f"\"onmouseover=document.title='{PWNED}2' x=\""
IMG = f"<img src=x onerror=\"document.title='{PWNED}3'\">"
ESCAPES = "\x1b[31mred\x1b]0;retitled\x07\u202eevil"
JS_LINK = f"javascript:document.title='{PWNED}4'"


# ------------------------------------------------------------------------- a real graded group


def _write_run(group: Path, name: str, meta: dict[str, Any], sub: pd.DataFrame | None) -> None:
    run = group / name
    (run / "submission").mkdir(parents=True)
    (run / "logs").mkdir()
    (run / "metadata.json").write_text(json.dumps(meta))
    if sub is not None:
        sub.to_csv(run / "submission" / "submission.csv", index=False)


def _sem(values: list[float]) -> float:
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0


def _aggregate(runs: list[dict[str, Any]], ids: list[str]) -> dict[str, Any]:
    """One split's `aggregates` entry, computed here by hand from the graded runs."""
    seeds = sorted({r["seed"] for r in runs})
    metrics = {}
    for key, field in (
        ("any_medal_percentage", "any_medal"),
        ("gold_medal_percentage", "gold_medal"),
        ("silver_medal_percentage", "silver_medal"),
        ("bronze_medal_percentage", "bronze_medal"),
        ("above_median_percentage", "above_median"),
        ("valid_submissions_percentage", "valid_submission"),
        ("submission_exists_percentage", "submission_exists"),
    ):
        per_seed = [
            100.0
            * sum(bool(r[field]) for r in runs if r["seed"] == s and r["competition_id"] in ids)
            / len(ids)
            for s in seeds
        ]
        mean, se = statistics.fmean(per_seed), _sem(per_seed)
        metrics[key] = {
            "mean": mean,
            "ci_lower": mean - 1.96 * se,
            "ci_upper": mean + 1.96 * se,
            "standard_error": se,
        }
    metrics["total_competitions"] = {
        "mean": float(len(ids)),
        "ci_lower": 0,
        "ci_upper": 0,
        "standard_error": 0,
    }
    return {"num_seeds_averaged": len(seeds), "num_competitions_per_seed": len(ids), "metrics": metrics}


@pytest.fixture(scope="module")
def graded(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """demo-breast-cancer x 3 seeds (perfect, invalid, missing) and demo-diabetes x 3 seeds,
    graded by `mlebench-hpc grade`; then `aggregates` and `cost` set and the summaries rewritten."""
    group = tmp_path_factory.mktemp("report") / "group"
    bc = pd.read_csv(demo_data / "demo-breast-cancer/prepared/private/test.csv")[["id", "target"]]
    db = pd.read_csv(demo_data / "demo-diabetes/prepared/private/test.csv")[["id", "target"]]
    base = {"agent_id": "aide/dev", "agent_kwargs": {"agent.code.model": "gpt-4o"}, "time_limit_secs": 86400}
    base |= {"start": "2026-12-01T10:00:00+00:00", "status": "finished"}
    subs = {
        "demo-breast-cancer": [bc.assign(target=bc["target"].astype(float)), bc.iloc[:-5], None],
        "demo-diabetes": [db, db.assign(target=150.0), db.assign(target=db["target"] + 1.0)],
    }
    for comp, per_seed in subs.items():
        for seed, sub in enumerate(per_seed):
            meta = {**base, "competition_id": comp, "seed": seed}
            _write_run(group, f"{comp}_{100 + seed}", {**meta, "agent_job_id": str(100 + seed)}, sub)
    env = {k: v for k, v in os.environ.items() if k not in ("MLEBENCH_HPC_CONFIG", "MLEBENCH_DIR")}
    env["HOME"] = str(group.parent / "home")
    proc = subprocess.run(
        [CLI, "grade", "--no-progress", str(group), "--data-dir", str(demo_data)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (group / "report.html").stat().st_size > 0  # `grade` writes it with the summaries

    path = group / "grading_report.json"
    report = json.loads(path.read_text())
    runs = report["competition_reports"]
    ids = sorted({r["competition_id"] for r in runs})
    report["aggregates"] = {
        "low": _aggregate(runs, ["demo-breast-cancer"]),  # as if it were one of upstream's splits
        "demo": {**_aggregate(runs, ids), "split_source": "sweep"},
        "high": {
            "split_source": "upstream",
            "error": "14 competitions of high have no run: give --pad-missing",
        },
    }
    for i, r in enumerate(runs):
        hw = {"cpus": 8, "mem_mb": 32768, "gpus": 1, "gpu_type": "a100", "nodes": ["n1"]}
        if i == len(runs) - 1:
            hw = {"cpus": 4, "mem_mb": 16384, "gpus": 0, "gpu_type": None, "nodes": ["n2"]}
        r["cost"] = {
            "source": "sacct",
            "elapsed_s": 1800.0 + 60 * i,
            "cpu_hours": 4.0,
            "gpu_hours": 0.5 + i / 10,
        }
        r["cost"] |= {"peak_mem_mb": 1000.0, "hardware": hw, "components": []}
    report["cost"] = {"source": "sacct", "elapsed_s": 12000.0, "cpu_hours": 24.0, "gpu_hours": 4.5}
    report["cost"] |= {"peak_mem_mb": 1000.0, "runs_with_cost": len(runs), "runs_without_cost": 0}
    path.write_text(json.dumps(report))
    reports = [CompetitionReport.from_dict(r) for r in runs]
    written = write_summaries(reports, group, title="group", warn=pytest.fail)  # reads the file
    assert [p.name for p in written][-1] == "report.html"
    return group


def _csv(group: Path) -> pd.DataFrame:
    return pd.read_csv(group / "summary.csv", keep_default_na=False, dtype=str)


def test_the_leaderboard_row_in_summary_csv_and_md(graded: Path) -> None:
    csv = _csv(graded)
    assert list(csv["row_type"]) == ["COMPETITION", "COMPETITION", "OVERALL", "LEADERBOARD"]
    lb = csv[csv["row_type"] == "LEADERBOARD"].iloc[0]
    aggs = json.loads((graded / "grading_report.json").read_text())["aggregates"]
    low = aggs["low"]["metrics"]["any_medal_percentage"]
    assert lb["lb_low"] == f"{low['mean']:.2f}% ± {low['standard_error']:.2f}%" == "33.33% ± 33.33%"
    assert lb["lb_medium"] == lb["lb_high"] == lb["lb_all"] == "n/a"  # absent; high has an error
    assert lb["lb_own_set"] == "demo" and lb["lb_own_set_any_medal"].endswith("%")
    assert (lb["agent_id"], lb["lb_model"], lb["lb_time_limit"]) == ("aide/dev", "gpt-4o", "24h")
    assert lb["lb_hardware"] == "1 x a100, 8 CPUs, 32 GiB; no GPU, 4 CPUs, 16 GiB"
    assert (lb["lb_gpu_hours"], lb["lb_date"]) == ("4.50", "2026-12-01")
    # the rows that were there before keep their values
    overall = csv[csv["row_type"] == "OVERALL"].iloc[0]
    assert overall["competition_id"] == "OVERALL" and overall["runs"] == "6"
    md = (graded / "summary.md").read_text()
    assert "## Leaderboard row" in md
    assert (
        "| aide/dev | gpt-4o | 33.33% ± 33.33% | n/a | n/a | n/a | "
        f"{lb['lb_own_set_any_medal']} | 24h | 1 x a100, 8 CPUs, 32 GiB; no GPU, 4 CPUs, 16 GiB | "
        "4.50 | 2026-12-01 |"
    ) in md


def test_an_old_report_without_aggregates_or_cost_says_n_a(graded: Path, tmp_path: Path) -> None:
    report = json.loads((graded / "grading_report.json").read_text())
    report.pop("aggregates")
    for r in report["competition_reports"]:
        r.pop("cost")
    # as the cost part writes it when no run's cost is known: not "0.00 GPU-hours"
    report["cost"] = {"source": None, "elapsed_s": 0, "cpu_hours": 0, "gpu_hours": 0, "runs_with_cost": 0}
    report["cost"] |= {"runs_without_cost": 6, "peak_mem_mb": None}
    reports = [CompetitionReport.from_dict(r) for r in report["competition_reports"]]
    write_summaries(reports, tmp_path, title="old", warn=pytest.fail, group=report)
    lb = _csv(tmp_path).iloc[-1]
    assert [lb[f"lb_{c}"] for c in ("low", "medium", "high", "all", "hardware", "gpu_hours")] == ["n/a"] * 6
    page = (tmp_path / "report.html").read_text()
    assert 'id="no-splits"' in page and 'id="runs"' in page
    report["cost"] |= {"gpu_hours": 2.0, "runs_with_cost": 4, "runs_without_cost": 2}
    assert leaderboard_rows(report, {})[0].gpu_hours == "2.00 (4 of 6 runs)"


# ------------------------------------------------------------------------- escaping


def _planted(graded: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The graded group with agent-written strings planted wherever report.html shows one."""
    report = json.loads((graded / "grading_report.json").read_text())
    runs = report["competition_reports"]
    runs[0]["competition_id"] = SCRIPT
    runs[1]["error"] = ATTR + ESCAPES
    runs[2]["agent_id"] = IMG
    runs[3]["run_dir"] = str(graded / JS_LINK)
    report["aggregates"][SCRIPT + ATTR] = report["aggregates"]["demo"] | {"error": IMG}
    meta = {r["run_dir"]: {"status": ATTR, "agent_models": [SCRIPT, ESCAPES], "start": IMG} for r in runs}
    return report, meta


def test_agent_written_strings_are_escaped_in_the_page(graded: Path) -> None:
    report, meta = _planted(graded)
    page = render_report_html(graded, SCRIPT, report, meta, leaderboard_rows(report, meta), None)
    for raw in (SCRIPT, ATTR, IMG, "<img", 'onmouseover="', "\x1b", "\u202e", 'href="javascript'):
        assert raw not in page, raw
    assert "&lt;script&gt;" in page and "\\x1b[31mred" in page and "\\u202eevil" in page
    assert 'href="./javascript%3Adocument.title' in page  # a relative path, never a scheme
    assert page.count("<script>") == 1  # ours


# ------------------------------------------------------------------------- headless Chromium


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        why = "chromium is not installed (tests/run_all.sh as root installs it; or apt-get install chromium)"
        if os.environ.get("MLEBENCH_REQUIRE_CHROMIUM") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return found


@pytest.fixture()
def browser_dir() -> Iterator[Path]:
    """A directory the browser's user can read and write (the test user's when we are root)."""
    d = Path(tempfile.mkdtemp(prefix="mh-report-browser-"))
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam(TEST_USER)
        except KeyError:
            pytest.fail(
                f"test user {TEST_USER} missing: as root, Chromium runs as the test user (its sandbox on)"
            )
        os.chown(d, pw.pw_uid, pw.pw_gid)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _browse(page: Path, fragment: str, work: Path, shot: Path | None = None) -> str:
    """The DOM after the page's scripts ran, as the test user when we are root."""
    _chromium()
    return browse(page, fragment, work, shot, TEST_USER if os.geteuid() == 0 else None)


def test_chromium_shows_the_numbers_of_summary_csv(graded: Path, browser_dir: Path, tmp_path: Path) -> None:
    page = browser_dir / "report.html"
    shutil.copyfile(graded / "report.html", page)
    os.chmod(page, 0o644)
    shot = tmp_path / "report.png"
    dom = parse(_browse(page, "#sort=score:desc", browser_dir, shot))
    print(f"screenshot: {shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

    csv = _csv(graded)
    lb_csv = csv[csv["row_type"] == "LEADERBOARD"].iloc[0]
    (lb_dom,) = rows(dom, "leaderboard")
    for field in ("lb_agent", "lb_model", "lb_low", "lb_medium", "lb_high", "lb_all", "lb_own_set_any_medal"):
        assert lb_dom[field] == lb_csv[field], field
    for field in ("lb_time_limit", "lb_hardware", "lb_gpu_hours", "lb_date"):
        assert lb_dom[field] == lb_csv[field], field

    # each split's mean ± SEM: the leaderboard columns of summary.csv, and the report's aggregates
    splits = {r["split"]: r for r in rows(dom, "splits")}
    assert splits["low"]["any_medal_percentage"] == lb_csv["lb_low"]
    assert splits["demo"]["any_medal_percentage"] == lb_csv["lb_own_set_any_medal"]
    assert "any_medal_percentage" not in splits["high"]  # its error instead of figures
    aggs = json.loads((graded / "grading_report.json").read_text())["aggregates"]
    for name in ("low", "demo"):
        for key, m in aggs[name]["metrics"].items():
            if key != "total_competitions":
                assert splits[name][key] == f"{m['mean']:.2f}% ± {m['standard_error']:.2f}%", (name, key)
        m = aggs[name]["metrics"]["any_medal_percentage"]
        assert splits[name]["any_medal_interval"] == f"[{m['ci_lower']:.2f}%, {m['ci_upper']:.2f}%]"
        assert splits[name]["num_seeds_averaged"] == "3"

    # each run's score and medal: the report's, and per competition summary.csv's counts and mean
    runs = rows(dom, "runs")
    report = json.loads((graded / "grading_report.json").read_text())["competition_reports"]
    assert len(runs) == len(report) == 6
    by_key = {(r["competition_id"], str(r["seed"])): r for r in report}
    for row in runs:
        r = by_key[(row["competition"], row["seed"])]
        want = r["score"] if r["valid_submission"] else None
        assert (row["score"] == "-") if want is None else float(row["score"]) == pytest.approx(want, abs=1e-5)
        medal = next((m for m in ("gold", "silver", "bronze") if r[f"{m}_medal"]), None)
        assert row["medal"] == medal or (medal is None and row["medal"] in ("-", "> median"))
    per_comp = csv[csv["row_type"] == "COMPETITION"].set_index("competition_id")
    for comp, c in per_comp.iterrows():
        mine = [row for row in runs if row["competition"] == comp]
        assert sum(row["medal"] == "gold" for row in mine) == int(c["gold"])
        scores = [float(row["score"]) for row in mine if row["score"] != "-"]
        assert statistics.fmean(scores) == pytest.approx(float(c["score_mean"]), rel=1e-4)

    # sorted on load by the fragment: highest score first, runs without a score last
    assert dom.sorted == "score:desc"
    shown = [row["score"] for row in runs]
    valued = [float(s) for s in shown if s != "-"]
    assert valued == sorted(valued, reverse=True) and shown[len(valued) :] == ["-"] * (
        len(shown) - len(valued)
    )
    assert all(h.startswith("./") and h.endswith("/logs/") and ":" not in h for h in dom.hrefs)


def test_clicking_a_header_sorts_in_chromium(graded: Path, browser_dir: Path) -> None:
    """The page's own click handler: a copy with a script appended that clicks the seed header's
    button twice (the copy drops the page's script-hash policy so that the extra script runs)."""
    text = (graded / "report.html").read_text()
    start = text.index('<meta http-equiv="Content-Security-Policy"')
    text = text[:start] + text[text.index(">", start) + 1 :]
    clicks = "var b=document.querySelector('th[data-col=seed] button');b.click();b.click();"
    page = browser_dir / "clicked.html"
    page.write_text(text.replace("</body>", f"<script>{clicks}</script></body>"))
    os.chmod(page, 0o644)
    dom = parse(_browse(page, "", browser_dir))
    assert dom.sorted == "seed:desc"  # first click ascending, second descending
    seeds = [int(r["seed"]) for r in rows(dom, "runs")]
    assert seeds == sorted(seeds, reverse=True)
    # every header is a button: reachable with Tab, pressed with Enter or Space
    assert '<th data-col="seed" data-num><button type="button">' in text


def test_planted_strings_do_not_run_in_chromium(graded: Path, browser_dir: Path) -> None:
    report, meta = _planted(graded)
    raw = browser_dir / "raw.html"  # the control: the same strings unescaped do run
    raw.write_text(f"<!DOCTYPE html><html><head><title>t</title></head><body><p>{SCRIPT}</p></body></html>")
    os.chmod(raw, 0o644)
    control = parse(_browse(raw, "", browser_dir))
    assert control.title == f"{PWNED}1" and control.body_attrs.get("id") == PWNED

    page = browser_dir / "planted.html"
    page.write_text(render_report_html(graded, "t", report, meta, leaderboard_rows(report, meta), None))
    os.chmod(page, 0o644)
    dom = parse(_browse(page, "#sort=competition:asc", browser_dir))
    assert PWNED not in dom.title and dom.body_attrs.get("id") != PWNED
    assert dom.scripts == 1 and not {a for a in dom.attrs if a.startswith("on")}
    assert not [h for h in dom.hrefs if h.lower().startswith("javascript")]
    texts = [v for r in rows(dom, "runs") for v in r.values()]
    assert SCRIPT in texts and any(t.startswith(ATTR) for t in texts)  # shown as text, literally
    assert any("\\x1b[31mred" in t for t in texts) and not any("\x1b" in t for t in texts)
