"""The Monitoring section and the Grafana dashboard use only metrics the exporter serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pynenc_postgres.metrics import metric_names

DOCS = Path(__file__).resolve().parents[2] / "docs"
# A metric name in PromQL: not a label value ("..."), nor part of a longer word.
_NAME = re.compile(r'(?<!")\bpynenc_[a-z_]+\b')


def monitoring_section() -> str:
    text = (DOCS / "operations.md").read_text()
    start = text.index("\n## Monitoring\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def promql_blocks() -> list[str]:
    return re.findall(r"^```promql\n(.*?)^```$", monitoring_section(), re.MULTILINE | re.DOTALL)


def documented_table() -> list[str]:
    section = monitoring_section().split("### Metrics", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"^\| `(pynenc_[a-z_]+)` \|", section, re.MULTILINE)


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [
        v["query"]["query"]
        for v in dashboard["templating"]["list"]
        if isinstance(v.get("query"), dict)
    ]
    return exprs


def test_every_served_metric_is_documented_once() -> None:
    table = documented_table()
    assert sorted(table) == sorted(metric_names())


def test_alerts_use_served_metrics() -> None:
    used = {name for block in promql_blocks() for name in _NAME.findall(block)}
    assert used, "no PromQL found in the Monitoring section"
    assert used <= set(metric_names()), used - set(metric_names())


def test_dashboard_uses_served_metrics() -> None:
    used = {name for expr in dashboard_expressions() for name in _NAME.findall(expr)}
    assert len(used) >= 10
    assert used <= set(metric_names()), used - set(metric_names())
    # Every panel shows something the exporter serves.
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        assert any(_NAME.search(t["expr"]) for t in panel["targets"]), panel["title"]
