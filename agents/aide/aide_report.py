"""AIDE's final report (aideml 0.2.2's journal2report) as a step of its own, so that start.sh
can bound it with `timeout`: aideml retries an unreachable endpoint forever, and inside `aide`
the report would keep a finished run waiting until its time limit.
Also works around an aideml 0.2.2 bug: it renames the report's max_tokens to max_output_tokens
(a Responses API name) on the chat-completions path too, which the openai client refuses with a
TypeError; with an OpenAI-compatible endpoint the limit is left to the server instead.

usage: aide_report.py --journal LOG_DIR/journal.json --desc-file F --model M [report.model=M]
       [report.temp=T] [other aide arguments, ignored]
Writes report.md beside the journal, as `aide` itself would."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import aide.journal2report as j2r
from aide.backend import query
from aide.journal import Journal
from aide.journal2report import journal2report
from aide.utils.config import StageConfig
from aide.utils.serialize import load_json


def _query_for_endpoint(*args: Any, **kwargs: Any) -> Any:
    kwargs.pop("max_tokens", None)
    return query(*args, **kwargs)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--journal", type=Path, required=True)
    parser.add_argument("--desc-file", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--temp", type=float, default=1.0)
    args, rest = parser.parse_known_args(argv)
    model, temp = args.model, args.temp
    for item in rest:  # the same overrides `aide` got (start.sh passes its arguments on)
        key, _, value = item.partition("=")
        if key == "report.model" and value:
            model = value
        elif key == "report.temp" and value:
            temp = float(value)
    if os.environ.get("OPENAI_BASE_URL"):
        j2r.query = _query_for_endpoint
    journal = load_json(args.journal, Journal)
    task_desc = args.desc_file.read_text()
    report = journal2report(journal, task_desc, StageConfig(model=model, temp=temp))
    out = args.journal.parent / "report.md"
    out.write_text(str(report))
    print(f"Report written to file: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
