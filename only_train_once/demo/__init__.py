"""The end-to-end demo (``python -m only_train_once.demo`` or ``oto-demo``): GETA on offline digits data."""

from .pipeline import DemoResult, main, report, run

__all__ = ["run", "report", "main", "DemoResult"]
