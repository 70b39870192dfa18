"""The one exception the pipeline raises for recordings it cannot use."""

from __future__ import annotations


class UnusableRecording(Exception):
    """A recording that must be skipped.

    ``reason`` is a short category used to count skips in the run summary (``"truncated"``,
    ``"missing electrodes"``, ``"flat channel"``, ...); ``detail`` says exactly what is wrong.
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
