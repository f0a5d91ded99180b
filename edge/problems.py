"""A connection's current problem, for the MQTT clients (the edge's publisher and the centre's intake).

Each problem is logged once, when it starts or changes; its repeats (every reconnect attempt) go to debug, so
a broker that is down for an hour is one warning in the log, not thousands. The latest text stays readable
for `stats()` and the status message until the connection is healthy again.
"""
from __future__ import annotations

import logging


class ProblemLog:
    """The problem a connection has now (`key`, e.g. ``refused:135``) and the text of the latest report."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self.key: str | None = None
        self.text: str | None = None

    def report(self, key: str, level: int, text: str) -> None:
        self.text = text
        if key != self.key:
            self.key = key
            self._logger.log(level, text)
        else:
            self._logger.debug(text)

    def clear(self) -> str | None:
        """The problem is over: forget it, and return its last text (None if there was none)."""
        was = self.text if self.key is not None else None
        self.key = self.text = None
        return was
