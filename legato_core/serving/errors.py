"""What the serving layer refuses: messages meant for the person using the demo."""

from __future__ import annotations


class StudioError(ValueError):
    """A request the studio refuses; the message is meant for the person using the demo."""


class BusyError(StudioError):
    """This session already has a job running."""
