"""An experiment's results, read from the journal alone: the table (table.py), its renderings as
text, JSON and CSV (render.py), and paired tests between trials (paired.py). `orch results`, the
head's results endpoint and `orch report` all draw from here.
"""
from .paired import PairedTest, paired_tests, render_paired
from .render import (
    ResultsFormat,
    column_header,
    format_cell,
    format_field,
    render_csv,
    render_json,
    render_rich,
    render_table,
    row_status,
    to_records,
)
from .table import ResultsTable, Row, build_table, failed_trials, final_loss, one_line, select_metrics, split_metrics

__all__ = ["PairedTest", "ResultsFormat", "ResultsTable", "Row", "build_table", "column_header", "failed_trials",
           "final_loss", "format_cell", "format_field", "one_line", "paired_tests", "render_csv", "render_json",
           "render_paired", "render_rich", "render_table", "row_status", "select_metrics", "split_metrics",
           "to_records"]
