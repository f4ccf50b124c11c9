"""`orch report`: an experiment as a static HTML folder a researcher can open or send.

    build_report(journal_url, experiment_id, out_dir, blobs_uri=..., tallies=None)

collect.py reads the journal (the results table through orchestrator.results), figures.py plots with
matplotlib, page.py writes the HTML, build.py copies the pictures out of the blob store and swaps
the finished folder into place.
"""
from .build import build_report

__all__ = ["build_report"]
