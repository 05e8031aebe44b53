"""report.html as headless Chromium shows it: the DOM after the page's own script ran (Debian's
`chromium`, its sandbox on), read back into its tables. Used by test_report_html.py and, as a
command, by tests/bats/test_results.bats (run as the test user there):

    python report_page.py PAGE [--fragment '#sort=score:desc'] [--shot PNG]

prints {"title", "sorted", "tables": {table id: [{data-field: text}, ...]}} as JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import click


def browse(page: Path, fragment: str, work: Path, shot: Path | None = None, user: str | None = None) -> str:
    """The DOM after the page's scripts ran (and a screenshot into SHOT). USER: run Chromium as
    that account (runuser; for root, whose Chromium would need --no-sandbox)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    cmd = [chromium, "--headless", "--disable-gpu", "--no-first-run", f"--user-data-dir={work}/profile"]
    cmd += ["--window-size=1400,2000", "--virtual-time-budget=2000"]
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    url = page.as_uri() + fragment
    env = {**os.environ, "HOME": str(work)}
    if shot is not None:
        out = work / "shot.png"
        subprocess.run(
            [*cmd, f"--screenshot={out}", url], capture_output=True, env=env, timeout=60, check=True
        )
        shutil.copyfile(out, shot)
    proc = subprocess.run([*cmd, "--dump-dom", url], capture_output=True, text=True, env=env, timeout=60)
    if proc.returncode != 0 or "</html>" not in proc.stdout:
        raise RuntimeError(f"chromium --dump-dom failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


class Cells(HTMLParser):
    """Per table id: its rows, each a list of (data-field, text) of its cells; <a> hrefs; every
    attribute name seen; <script> count; the title."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str]]]] = {}
        self.table: str | None = None
        self.cell: tuple[str, list[str]] | None = None
        self.hrefs: list[str] = []
        self.attrs: set[str] = set()
        self.scripts = 0
        self.body_attrs: dict[str, str | None] = {}
        self.in_title = False
        self.title = ""
        self.sorted: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.attrs |= set(a)
        if tag == "table":
            self.table = a.get("id") or ""
            self.tables[self.table] = []
            self.sorted = a.get("data-sorted") if self.table == "runs" else self.sorted
        elif tag == "tr" and self.table is not None:
            self.tables[self.table].append([])
        elif tag == "td" and self.table is not None:
            self.cell = (a.get("data-field") or "", [])
        elif tag == "a":
            self.hrefs.append(a.get("href") or "")
        elif tag == "script":
            self.scripts += 1
        elif tag == "body":
            self.body_attrs = a
        elif tag == "title":
            self.in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self.cell is not None and self.table is not None:
            self.tables[self.table][-1].append((self.cell[0], "".join(self.cell[1]).strip()))
            self.cell = None
        elif tag == "table":
            self.table = None
        elif tag == "title":
            self.in_title = False

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell[1].append(data)
        if self.in_title:
            self.title += data


def parse(dom: str) -> Cells:
    c = Cells()
    c.feed(dom)
    return c


def rows(c: Cells, table: str) -> list[dict[str, str]]:
    return [dict(r) for r in c.tables.get(table, []) if r]


@click.command()
@click.argument("page", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--fragment", default="", help="appended to the page's URL, e.g. #sort=score:desc")
@click.option("--shot", type=click.Path(dir_okay=False, path_type=Path), help="write a screenshot here")
def main(page: Path, fragment: str, shot: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="mh-report-page-") as work:
        dom = parse(browse(page.resolve(), fragment, Path(work), shot))
    tables = {name: rows(dom, name) for name in dom.tables}
    click.echo(json.dumps({"title": dom.title, "sorted": dom.sorted, "tables": tables}))


if __name__ == "__main__":
    main()
