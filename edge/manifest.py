"""Model manifest: the JSON beside each ONNX model (``models/<name>.manifest.json``).

The manifest is the single place that says how to feed a model (input size, colour order,
scale, padding), how to decode it (format, NMS IoU, per-class thresholds) and what its classes
mean to the city (incident type, case codes). The models here are inert data; the only I/O is in
:func:`load_manifest`, which turns every problem into one :class:`ManifestError` naming the file
and the key.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path, PurePath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "ClassCodes",
    "ClassSpec",
    "Gb2026Code",
    "IncidentType",
    "InputSpec",
    "LegacyCode",
    "Manifest",
    "ManifestError",
    "OutputSpec",
    "file_sha256",
    "load_manifest",
    "manifest_path_for",
    "model_path_of",
]

logger = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".manifest.json"

IncidentType = Literal["manhole_missing", "ponding", "illegal_structure", "garbage_exposed", "material_pile"]


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and the offending key."""


class _Base(BaseModel):
    """Base of every manifest model: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid")


class InputSpec(_Base):
    """How frames are turned into the model's input tensor."""

    width: int = Field(ge=1, le=8192, description="Model input width in pixels (the W of NCHW).")
    height: int = Field(ge=1, le=8192, description="Model input height in pixels (the H of NCHW).")
    color: Literal["RGB", "BGR"] = Field("RGB", description="Channel order the model expects (ultralytics exports: RGB).")
    scale: float = Field(1 / 255, gt=0, description="Multiplier applied to 0..255 pixel values (1/255 gives 0..1).")
    pad_value: int = Field(114, ge=0, le=255, description="Grey level of the letterbox padding.")


class OutputSpec(_Base):
    """How the model's output tensor is laid out."""

    format: Literal["yolov8"] = Field(
        "yolov8",
        description="yolov8: [1, 4+nc, N], cx, cy, w, h in input pixels then nc sigmoided class scores; no NMS.",
    )


class LegacyCode(_Base):
    """Case code in the legacy urban-management coding (two-digit major and minor)."""

    major: str = Field(pattern=r"^\d{2}$", description="Major category code, two digits, e.g. '01'.")
    minor: str = Field(pattern=r"^\d{2}$", description="Minor category code, two digits, e.g. '14'.")


class Gb2026Code(_Base):
    """Case code in the GB 2026 coding (two-digit major, three-digit minor)."""

    major: str = Field(pattern=r"^\d{2}$", description="Major category code, two digits, e.g. '01'.")
    minor: str = Field(pattern=r"^\d{3}$", description="Minor category code, three digits, e.g. '023'.")


class ClassCodes(_Base):
    """How a class is filed as a city-management case."""

    case_kind: Literal["部件", "事件"] = Field(description="部件 (component/asset) or 事件 (event).")
    type_name: str = Field(min_length=1, description="Case type name as the case system spells it.")
    legacy: LegacyCode | None = Field(None, description="Code in the legacy scheme, if it has one.")
    gb2026: Gb2026Code | None = Field(None, description="Code in the GB 2026 scheme, if it has one.")


class ClassSpec(_Base):
    """One model class: its id, name, alert threshold and city meaning."""

    id: int = Field(ge=0, description="Class index in the model output (0..nc-1, in order).")
    name: str = Field(min_length=1, description="Class name; unique; must match the model's metadata 'names'.")
    threshold: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Minimum score to report a detection. Raising it cuts false alarms but misses faint objects.",
    )
    incident_type: IncidentType | None = Field(None, description="Incident this class raises, or null if none.")
    codes: ClassCodes | None = Field(None, description="Case codes for filing, or null if the class is never filed.")


class Manifest(_Base):
    """Everything needed to run and interpret one exported model."""

    name: str = Field(min_length=1, description="Model name; the manifest file is '<name>.manifest.json'.")
    version: str = Field(min_length=1, description="Model version, e.g. '2025.11.1'.")
    model_file: str = Field(description="ONNX file name, relative to the manifest's folder, e.g. '<name>.onnx'.")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="Hex SHA-256 of the ONNX file.")
    input: InputSpec = Field(description="How frames are fed to the model.")
    output: OutputSpec = Field(default_factory=OutputSpec, description="How the output tensor is laid out.")
    nms_iou: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="IoU above which NMS drops the weaker same-class box. Raising it keeps adjacent objects "
        "apart but risks duplicate boxes on one object.",
    )
    max_detections: int = Field(100, ge=1, description="Cap on detections kept per frame after NMS.")
    classes: list[ClassSpec] = Field(min_length=1, description="Classes in model output order.")
    training: dict[str, Any] = Field(default_factory=dict, description="Free-form: data summary, recipe, metrics.")

    @field_validator("model_file")
    @classmethod
    def _model_file_is_relative_onnx(cls, value: str) -> str:
        path = PurePath(value)
        if path.is_absolute() or value.startswith(("/", "\\")):
            raise ValueError(f"must be relative to the manifest's folder, got {value!r}")
        if path.suffix != ".onnx":
            raise ValueError(f"must name an .onnx file, got {value!r}")
        return value

    @field_validator("classes")
    @classmethod
    def _class_ids_in_order_and_names_unique(cls, classes: list[ClassSpec]) -> list[ClassSpec]:
        ids = [c.id for c in classes]
        if ids != list(range(len(ids))):
            raise ValueError(f"ids must be 0..{len(ids) - 1} in order, got {ids}")
        names = [c.name for c in classes]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"names must be unique, duplicated: {duplicates}")
        return classes

    @property
    def class_names(self) -> list[str]:
        """Class names in id order."""
        return [c.name for c in self.classes]

    @property
    def thresholds(self) -> list[float]:
        """Per-class score thresholds in id order."""
        return [c.threshold for c in self.classes]


def manifest_path_for(model_path: str | Path) -> Path:
    """``models/x.onnx`` -> ``models/x.manifest.json`` (the manifest beside a model)."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + MANIFEST_SUFFIX)


def model_path_of(manifest_path: str | Path, manifest: Manifest) -> Path:
    """The ONNX file a manifest points to (``model_file`` is relative to the manifest)."""
    return Path(manifest_path).parent / manifest.model_file


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks so large models do not sit in memory twice."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_manifest(path: str | Path, *, verify_sha256: bool = True) -> Manifest:
    """Read, validate and (by default) hash-check a manifest.

    Hash checking catches a model swapped without its manifest (thresholds and class meanings
    silently applied to the wrong weights); turn it off only where reading the model twice at
    start-up matters.

    Raises:
        ManifestError: unreadable file, bad JSON, schema errors, missing model file, or sha256
            mismatch; the message names the manifest file and the key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ManifestError(f"{path}: cannot read manifest: {e.strerror or e}") from e
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"key '{_format_loc(err['loc'])}': {err['msg']}" for err in e.errors())
        raise ManifestError(f"{path}: invalid manifest: {problems}") from e

    model_path = model_path_of(path, manifest)
    if not model_path.is_file():
        raise ManifestError(f"{path}: key 'model_file' is {manifest.model_file!r} but {model_path} does not exist")
    if verify_sha256:
        actual = file_sha256(model_path)
        if actual != manifest.sha256.lower():
            raise ManifestError(
                f"{path}: key 'sha256' is {manifest.sha256.lower()} but {model_path.name} hashes to {actual}; "
                "the model and its manifest are out of step (re-export, or restore the matching model)"
            )
    logger.debug("loaded manifest %s (%s %s, %d classes)", path, manifest.name, manifest.version, len(manifest.classes))
    return manifest
