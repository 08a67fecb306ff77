"""The executive report: one market's findings and recommendation for a busy reader, as HTML and Markdown.

``data`` reads the numbers from the published BI catalog (read-only), ``content`` decides what to say,
``charts`` draws, ``render`` fills the Jinja2 templates in ``templates/`` and writes a dated report
folder atomically. No Dagster here: the ``executive_report`` asset is a thin wrapper.
"""

from .content import SECTIONS, Thresholds
from .data import CheckStatus, ReportData, ReportDataError, load_report_data, serving_ids
from .render import (
    Report,
    build_report,
    html_problems,
    latest_report,
    read_manifest,
    write_report,
)
from .untrusted import UntrustedData, build_untrusted_page, load_untrusted_data

__all__ = [
    "SECTIONS",
    "CheckStatus",
    "Report",
    "ReportData",
    "ReportDataError",
    "Thresholds",
    "UntrustedData",
    "build_untrusted_page",
    "load_untrusted_data",
    "serving_ids",
    "build_report",
    "html_problems",
    "latest_report",
    "load_report_data",
    "read_manifest",
    "write_report",
]
