"""Where devtools/local_stack.py still finds the billing report: delete this module once its two
imports read from billwatch.reporting.model, .scoring, .cloudwatch_source and .renderers."""

from billwatch.reporting.cloudwatch_source import CloudWatchReportSource
from billwatch.reporting.model import ReportPeriod, report_window
from billwatch.reporting.renderers import render_console
from billwatch.reporting.scoring import build_report

__all__ = ["CloudWatchReportSource", "ReportPeriod", "build_report", "render_console", "report_window"]
