"""Small builders shared by the message and publisher tests: a manifest with the shipped default codes and
incident events with known content."""
from __future__ import annotations

from edge.codes import default_class_entries
from edge.manifest import Manifest
from edge.types import IncidentEvent

# a valid JPEG is not needed by the messages; a recognisable byte string is
FAKE_JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9"
T0 = 1_782_868_200.0  # 2026-07-01T09:10:00+08:00


def make_manifest() -> Manifest:
    return Manifest(name="cityops_det_n416", version="2026.7.1", model_file="cityops_det_n416.onnx",
                    sha256="ab" * 32, input={"width": 416, "height": 416}, classes=default_class_entries({}))


def make_event(i: int = 0, *, class_name: str = "garbage_pile", event: str = "opened", camera_id: str = "cam01",
               jpeg: bytes | None = FAKE_JPEG, located: bool = True, **kw: object) -> IncidentEvent:
    fields: dict = dict(
        message_id=f"m-{i:06d}", incident_id=f"inc-{i // 3:05d}", event=event, class_name=class_name,
        camera_id=camera_id, ts=T0 + i * 2.0, discovered_ts=T0 + (i // 3) * 6.0, confidence=0.8731,
        box_xyxy=(812.25, 604.0, 1010.5, 760.75), image_size=(1920, 1080), zone="sidewalk",
        ground_xy=(12.5, 30.25) if located else None,
        lon=120.5853210 if located else None, lat=31.2989450 if located else None,
        accuracy_m=1.8 if located else None, evidence_jpeg=jpeg)
    fields.update(kw)
    return IncidentEvent(**fields)


def enqueue_events(outbox, start: int, n: int, *, edge_id: str, cameras: int) -> list[str]:
    """Put events start..start+n-1 (inline evidence, camera i % cameras) into an outbox, one transaction each;
    returns their message ids in order."""
    from edge.messages import incident_publications

    manifest = make_manifest()
    ids = []
    for i in range(start, start + n):
        ev = make_event(i, camera_id=f"cam{i % cameras}")
        outbox.put_many(incident_publications(ev, edge_id=edge_id, admin_code="320582", utc_offset="+08:00",
                                              manifest=manifest, evidence_mode="inline"))
        ids.append(ev.message_id)
    return ids
