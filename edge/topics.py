"""The MQTT topic tree: the one place that knows topic names (everything else derives from here).

```
{prefix}/{edge_id}/status                       retained edge status, online / offline (the LWT)
{prefix}/{edge_id}/camera/{camera_id}/status    retained camera status
{prefix}/{edge_id}/incident/{camera_id}         incident messages (JSON, schema 1), QoS 1, not retained
{prefix}/{edge_id}/evidence/{incident_id}       evidence JPEG bytes when the broker's `evidence: topic`
{prefix}/{edge_id}/evidence/snapshot-{camera}-{utc}  a snapshot the centre asked for (`cmd/snapshot`)
{prefix}/{edge_id}/cmd/{command}                commands from the centre (subscribe to `cmd/#`)
{prefix}/{edge_id}/reply                        replies to commands
```

A centre subscribes to `{prefix}/+/incident/#` for every box of a city, or `{prefix}/{edge_id}/#` for one.
Every level we fill from data (edge, camera and incident ids) is checked here: a `/`, `+`, `#` or NUL in an
id would silently move a message to another topic or make a publish invalid.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Topics", "TopicError", "check_level"]

_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
_FORBIDDEN = ("/", "+", "#", "\x00")


class TopicError(ValueError):
    """An id that cannot be used as one topic level."""


def check_level(value: str, what: str) -> str:
    """Return `value` if it is a usable single topic level, else raise TopicError naming `what`."""
    if not isinstance(value, str) or not value:
        raise TopicError(f"{what} must be a non-empty string, got {value!r}")
    bad = [c for c in _FORBIDDEN if c in value]
    if bad:
        raise TopicError(f"{what} {value!r} contains {bad}: not allowed in one MQTT topic level")
    return value


@dataclass(frozen=True)
class Topics:
    """Topic names of one edge box under one prefix."""

    prefix: str
    edge_id: str

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix or ""):
            raise TopicError(f"topic prefix {self.prefix!r} must be levels of [A-Za-z0-9_-] separated by '/'")
        check_level(self.edge_id, "edge id")

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.edge_id}"

    @property
    def status(self) -> str:
        """Retained edge status; also the LWT topic."""
        return f"{self.base}/status"

    def camera_status(self, camera_id: str) -> str:
        return f"{self.base}/camera/{check_level(camera_id, 'camera id')}/status"

    def incident(self, camera_id: str) -> str:
        return f"{self.base}/incident/{check_level(camera_id, 'camera id')}"

    def evidence(self, incident_id: str) -> str:
        return f"{self.base}/evidence/{check_level(incident_id, 'incident id')}"

    @property
    def cmd_filter(self) -> str:
        """Subscription filter for every command to this box."""
        return f"{self.base}/cmd/#"

    def cmd(self, command: str) -> str:
        return f"{self.base}/cmd/{check_level(command, 'command')}"

    def command_of(self, topic: str) -> str | None:
        """`{base}/cmd/dismiss` → "dismiss"; None for a topic outside this box's command tree."""
        head = f"{self.base}/cmd/"
        if not topic.startswith(head):
            return None
        return topic[len(head):] or None

    @property
    def reply(self) -> str:
        return f"{self.base}/reply"
