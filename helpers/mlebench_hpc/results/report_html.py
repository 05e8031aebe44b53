"""report.html: one self-contained page per graded group (no network needed to view it).

The leaderboard row, the per-split table (upstream's aggregation, `aggregates`), a per-run table
sortable by any column (a small inline script; a URL fragment `#sort=<column>:<asc|desc>` sorts
on load, so a sorted view can be linked to) and the plots (summary.png, inline as a data: URL).
Everything comes from plain dicts (grading_report.json, metadata.json). Whatever an agent or its
metadata wrote (competition ids, agent ids, error lines, paths, models) is shown only through
`_esc` (control characters escaped visibly, then HTML-escaped, quotes included); links are
relative paths to a run's logs, percent-encoded, so no `javascript:` or other scheme can appear.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mlebench_hpc.printable import printable
from mlebench_hpc.results.leaderboard import (
    LEADERBOARD_SPLITS,
    NA,
    LeaderboardRow,
    agent_reports,
    hours_text,
    interval_text,
    split_text,
)
from mlebench_hpc.results.report_output import fmt_num, fmt_share
from mlebench_hpc.sweep.attribution import label as agent_label

REPORT_HTML = "report.html"
# upstream's SeedMetrics percentages, in its order (aggregates.<split>.metrics keys)
PERCENTAGES: tuple[tuple[str, str], ...] = (
    ("any_medal_percentage", "any medal"),
    ("gold_medal_percentage", "gold"),
    ("silver_medal_percentage", "silver"),
    ("bronze_medal_percentage", "bronze"),
    ("above_median_percentage", "above median"),
    ("valid_submissions_percentage", "valid"),
    ("submission_exists_percentage", "submission made"),
)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f2f2f2}
th button{font:inherit;font-weight:bold;border:0;background:none;cursor:pointer;padding:0}
th button:focus{outline:2px solid #3b6ea8}
th[aria-sort=ascending] button::after{content:" \\25B2"}
th[aria-sort=descending] button::after{content:" \\25BC"}
.small{font-size:.85em;color:#555}.err{color:#b22222}
.gold{background:#f6e7b0}.silver{background:#e4e4e4}.bronze{background:#efd6bd}
img{max-width:100%;border:1px solid #ddd}
"""

# Sorting: a button in each header (keyboard: Tab then Enter/Space); values from data-v, numeric
# columns (data-num) compared as numbers, empty values last either way.
JS = """
(function(){
  var table=document.getElementById('runs');
  if(!table)return;
  var heads=table.tHead.rows[0].cells;
  function sortBy(col,dir){
    var idx=-1;
    for(var i=0;i<heads.length;i++){
      if(heads[i].dataset.col===col){idx=i;heads[i].setAttribute('aria-sort',dir==='asc'?'ascending':'descending');}
      else heads[i].removeAttribute('aria-sort');
    }
    if(idx<0)return;
    var num=heads[idx].hasAttribute('data-num');
    var body=table.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
    rows.forEach(function(r,i){r._i=i;});
    rows.sort(function(a,b){
      var x=a.cells[idx].dataset.v,y=b.cells[idx].dataset.v;
      if(x===''||y===''){return x===y?a._i-b._i:(x===''?1:-1);}
      var c=num?(parseFloat(x)-parseFloat(y)):(x<y?-1:(x>y?1:0));
      if(c===0)return a._i-b._i;
      return dir==='asc'?c:-c;
    });
    rows.forEach(function(r){body.appendChild(r);});
    table.dataset.sorted=col+':'+dir;
  }
  for(var i=0;i<heads.length;i++){(function(th){
    var b=th.querySelector('button');if(!b)return;
    b.addEventListener('click',function(){
      var dir=th.getAttribute('aria-sort')==='ascending'?'desc':'asc';
      sortBy(th.dataset.col,dir);
      history.replaceState(null,'','#sort='+th.dataset.col+':'+dir);
    });
  })(heads[i]);}
  function fromHash(){
    var m=/^#sort=([a-z_]+):(asc|desc)$/.exec(location.hash);
    if(m)sortBy(m[1],m[2]);
  }
  window.addEventListener('hashchange',fromHash);
  fromHash();
})();
"""

SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(JS.encode()).digest()).decode()


def _esc(x: Any) -> str:
    """Agent-written text as HTML: control characters escaped visibly, then <, >, &, quotes."""
    return html.escape(printable(x), quote=True)


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(float(x)):
        return None
    return float(x)


def _td(text: Any, sort: Any = None, cls: str = "", field: str = "") -> str:
    v = "" if sort is None else sort
    attrs = f' data-v="{_esc(v)}"'
    if cls:
        attrs += f' class="{cls}"'
    if field:
        attrs += f' data-field="{field}"'
    return f"<td{attrs}>{_esc(text)}</td>"


def _leaderboard_html(rows: list[LeaderboardRow]) -> str:
    own_names = list(dict.fromkeys(n for r in rows for n in r.own_sets))
    head = ["agent", "model(s)", *(c for c, _ in LEADERBOARD_SPLITS), *own_names]
    head += ["time limit", "hardware per run", "GPU-hours", "date"]
    out = ['<table id="leaderboard"><thead><tr>']
    out += [f"<th>{_esc(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for r in rows:
        cells = [_td(r.agent, field="lb_agent"), _td(r.model_text(), field="lb_model")]
        cells += [_td(t, cls="num", field=f"lb_{c.lower()}") for c, t in r.splits.items()]
        cells += [_td(r.own_sets.get(n, NA), cls="num", field="lb_own_set_any_medal") for n in own_names]
        cells += [
            _td(r.time_limit, field="lb_time_limit"),
            _td(r.hardware, field="lb_hardware"),
            _td(r.gpu_hours, cls="num", field="lb_gpu_hours"),
            _td(r.date, field="lb_date"),
        ]
        out.append(f'<tr data-agent="{_esc(r.agent)}">' + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _splits_html(group: dict[str, Any]) -> str:
    agents = agent_reports(group)
    several = len(agents) > 1
    head = (["agent"] if several else []) + ["split", "source", "seeds", "competitions per seed"]
    head += [f"{label} % (mean ± SEM)" for _, label in PERCENTAGES] + ["any medal 95% interval"]
    body = []
    for agent, rep in agents.items():
        aggs = rep.get("aggregates") if isinstance(rep.get("aggregates"), dict) else {}
        for name, entry in aggs.items():
            if not isinstance(entry, dict):
                continue
            cells = [_td(agent_label(agent))] if several else []
            cells += [_td(name, field="split"), _td(entry.get("split_source") or "")]
            if entry.get("error"):
                span = len(head) - len(cells)
                cells.append(f'<td colspan="{span}" class="err">{_esc(entry["error"])}</td>')
            else:
                cells += [
                    _td(entry.get("num_seeds_averaged", NA), cls="num", field="num_seeds_averaged"),
                    _td(
                        entry.get("num_competitions_per_seed", NA),
                        cls="num",
                        field="num_competitions_per_seed",
                    ),
                ]
                cells += [_td(split_text(entry, m), cls="num", field=m) for m, _ in PERCENTAGES]
                cells.append(_td(interval_text(entry), cls="num", field="any_medal_interval"))
            pad = " data-pad-missing" if entry.get("pad_missing") else ""
            body.append(f'<tr data-split="{_esc(name)}"{pad}>' + "".join(cells) + "</tr>")
    if not body:
        return '<p id="no-splits">No per-split figures in this report (n/a).</p>'
    return (
        '<table id="splits"><thead><tr>'
        + "".join(f"<th>{_esc(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table>"
    )


def _logs_href(run_dir: Any, out_dir: Path) -> str | None:
    """A relative, percent-encoded link to RUN_DIR/logs when the run lies under OUT_DIR."""
    if not isinstance(run_dir, str) or not run_dir:
        return None
    try:
        rel = Path(run_dir).resolve().relative_to(out_dir.resolve())
    except (ValueError, OSError):
        return None
    if ".." in rel.parts:
        return None
    # "./" first: whatever the run's name, the link can never start with a scheme
    return "./" + quote(f"{rel.as_posix()}/logs/" if rel.parts else "logs/", safe="/")


def _medal(r: dict[str, Any]) -> str:
    for m in ("gold", "silver", "bronze"):
        if r.get(f"{m}_medal"):
            return m
    return "> median" if r.get("above_median") else "-"


def _outcome(r: dict[str, Any], meta: dict[str, Any]) -> str:
    graded = (
        "valid"
        if r.get("valid_submission")
        else ("invalid" if r.get("submission_exists") else "no submission")
    )
    status = meta.get("status")
    return f"{status}; {graded}" if isinstance(status, str) and status else graded


RUN_COLUMNS: tuple[tuple[str, str, bool], ...] = (  # (key, header, numeric)
    ("agent", "agent", False),
    ("competition", "competition", False),
    ("seed", "seed", True),
    ("score", "score", True),
    ("medal", "medal", False),
    ("beaten", "leaderboard beaten", True),
    ("status", "status", False),
    ("elapsed", "elapsed (h)", True),
    ("gpu_hours", "GPU-hours", True),
    ("logs", "logs", False),
    ("note", "note", False),
)
MEDALS = ("gold", "silver", "bronze")
MEDAL_RANK = {"gold": 3, "silver": 2, "bronze": 1, "> median": 0, "-": -1}


def _runs_html(group: dict[str, Any], metadata: dict[str, dict[str, Any]], out_dir: Path) -> str:
    agents = agent_reports(group)
    cols = [c for c in RUN_COLUMNS if c[0] != "agent" or len(agents) > 1]
    head = "".join(
        f'<th data-col="{k}"{" data-num" if num else ""}><button type="button">{_esc(h)}</button></th>'
        for k, h, num in cols
    )
    rows = []
    for agent, rep in agents.items():
        for r in rep.get("competition_reports") or []:
            if not isinstance(r, dict):
                continue
            meta = metadata.get(str(r.get("run_dir")), {})
            cost = r.get("cost") if isinstance(r.get("cost"), dict) else {}
            score = _num(r.get("score")) if r.get("valid_submission") else None
            share = _num(r.get("leaderboard_share_beaten"))
            elapsed, gpu_h = _num(cost.get("elapsed_s")), _num(cost.get("gpu_hours"))
            medal = _medal(r)
            seed = r.get("seed")
            seed_num = _num(seed) if not isinstance(seed, str) else (float(seed) if seed.isdigit() else None)
            href = _logs_href(r.get("run_dir"), out_dir)
            cells = {
                "agent": _td(agent_label(agent), agent_label(agent)),
                "competition": _td(
                    r.get("competition_id", ""), r.get("competition_id", ""), field="competition"
                ),
                "seed": _td(
                    "" if seed is None else seed, seed_num if seed_num is not None else "", "num", "seed"
                ),
                "score": _td(fmt_num(score) if score is not None else "-", score, "num", "score"),
                "medal": _td(medal, MEDAL_RANK[medal], medal if medal in MEDALS else "", "medal"),
                "beaten": _td(fmt_share(share) if share is not None else "-", share, "num", "beaten"),
                "status": _td(_outcome(r, meta), _outcome(r, meta), field="status"),
                "elapsed": _td(
                    hours_text(elapsed / 3600) if elapsed is not None else NA, elapsed, "num", "elapsed"
                ),
                "gpu_hours": _td(hours_text(gpu_h) if gpu_h is not None else NA, gpu_h, "num", "gpu_hours"),
                "logs": (
                    f'<td data-v="{_esc(href)}"><a href="{_esc(href)}">logs</a></td>'
                    if href
                    else '<td data-v="">-</td>'
                ),
                "note": _td(r.get("error") or "", r.get("error") or "", "small", "note"),
            }
            rows.append("<tr>" + "".join(cells[k] for k, _, _ in cols) + "</tr>")
    return (
        f'<table id="runs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
        '<p class="small">Click a column header (or Tab to it and press Enter) to sort; '
        "<code>#sort=score:desc</code> in the address sorts on load.</p>"
    )


def render_report_html(
    out_dir: Path,
    title: str,
    group: dict[str, Any],
    metadata: dict[str, dict[str, Any]],
    leaderboard: list[LeaderboardRow],
    png: bytes | None,
) -> str:
    """The page's text (see the module's docstring); PNG is summary.png's bytes, when drawn."""
    backend = group.get("grading_backend")
    sub = f"graded by {backend} ({group.get('grading_backend_version')})" if backend else ""
    created = str(group.get("created_at") or "")
    plot = (
        '<img alt="score per seed against medal thresholds" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        if png
        else "<p>No plot (matplotlib not installed).</p>"
    )
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        # Nothing loads from anywhere, and only our own script runs (by its hash): even a string
        # that escaped _esc could not run.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        f"style-src 'unsafe-inline'; script-src '{SCRIPT_HASH}'\">",
        f"<title>Grading report: {_esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>Grading report: {_esc(title)}</h1>",
        f'<p class="small">{_esc(sub)}{"; " if sub and created else ""}{_esc(created)}</p>',
        "<h2>Leaderboard row</h2>",
        '<p class="small">Any Medal % as mean ± SEM over seeds (upstream\'s aggregation; All = split75; '
        "n/a: not covered or not recorded).</p>",
        _leaderboard_html(leaderboard),
        "<h2>Per split</h2>",
        _splits_html(group),
        "<h2>Runs</h2>",
        _runs_html(group, metadata, out_dir),
        "<h2>Plots</h2>",
        plot,
        f"<script>{JS}</script></body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_report_html(
    out_dir: Path,
    title: str,
    group: dict[str, Any],
    metadata: dict[str, dict[str, Any]],
    leaderboard: list[LeaderboardRow],
    png_path: Path | None,
) -> Path:
    """Write OUT_DIR/report.html atomically; returns its path."""
    png = png_path.read_bytes() if png_path is not None and png_path.is_file() else None
    path = out_dir / REPORT_HTML
    tmp = path.with_name(f".{REPORT_HTML}.tmp")
    tmp.write_text(render_report_html(out_dir, title, group, metadata, leaderboard, png), encoding="utf-8")
    tmp.replace(path)
    return path
