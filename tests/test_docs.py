"""The README's generated parts are what the code generates."""

from __future__ import annotations

from pathlib import Path

from klag_collector import docs

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_metric_table_is_the_generated_one() -> None:
    """`python -m klag_collector.docs` prints the README's metric table, the sharding series too."""
    text = README.read_text()
    start, end = text.index(docs.BEGIN), text.index(docs.END) + len(docs.END)
    assert text[start:end] == docs.metrics_table()
    assert "`kafka_lag_exporter_shards_owned`" in docs.metrics_table()
