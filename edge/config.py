"""Site and rule configuration: pydantic models (extra="forbid"), loaded once and passed down.

A site file (`streams/<site>.yaml`) names the edge box, its broker and its cameras; each camera points at a
rule file (`rules/<camera>.yaml`) that operators tune. Errors name the file, the line where possible, the
key and what was expected — never a traceback for a user's mistake. Secrets come from the environment
(`${VAR}` in URLs, `*_env` keys) or a 0600 file, and are masked wherever a URL is shown.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(ValueError):
    """A user's configuration mistake: the message names file, key and what was expected."""


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------------------- rules
class ClassRule(_Base):
    enabled: bool = Field(True, description="report this class on this camera")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="score threshold; default: the model manifest's. "
                                    "Raising it cuts false alarms but misses faint incidents.")
    min_area: float = Field(0.0, ge=0.0, le=1.0, description="smallest box area as a fraction of the frame")
    max_area: float = Field(1.0, gt=0.0, le=1.0, description="largest box area as a fraction of the frame")

    @model_validator(mode="after")
    def _area_order(self) -> "ClassRule":
        if self.min_area >= self.max_area:
            raise ValueError(f"min_area ({self.min_area}) must be below max_area ({self.max_area})")
        return self


class Zone(_Base):
    name: str = Field(description="shown in messages as the incident's zone")
    polygon: list[tuple[float, float]] = Field(description="[x, y] points in normalised image coordinates (0..1)")
    classes: list[str] | None = Field(None, description="classes that count in this zone; default all")

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if len(v) < 3:
            raise ValueError(f"a zone needs at least 3 points, got {len(v)}")
        bad = [p for p in v if not (0.0 <= p[0] <= 1.0 and 0.0 <= p[1] <= 1.0)]
        if bad:
            raise ValueError(f"points {bad} lie outside the image: coordinates are normalised, 0..1")
        return v


class Persistence(_Base):
    window_s: float = Field(30.0, gt=0, description="how far back the vote looks. Longer rides out occlusions "
                            "but reports later.")
    vote_ratio: float = Field(0.6, gt=0, le=1, description="share of scans in the window that must see it")
    min_scans: int = Field(3, ge=1, description="scans needed in the window before any vote counts")
    keep_alive_ratio: float = Field(0.6, ge=0, le=1, description="an open incident stays open on sightings down to "
                                    "this share of its class threshold (hysteresis: a detector that wavers around the "
                                    "threshold does not resolve and reopen one thing); such weak sightings never open "
                                    "one. 1 turns it off")
    sustain_s: float = Field(60.0, ge=0, description="the sustained path: a thing one camera sees at the same place "
                             "for this long, in most scans and close to its threshold (sustain_ratio), opens even if "
                             "the vote never held: a far pile the model scores just under its threshold in scan after "
                             "scan is there. Longer than window_s: it reports later than sure sightings. 0 turns it off")
    sustain_ratio: float = Field(0.65, gt=0, le=1, description="the evidence the sustained path needs: the mean over "
                                 "the camera's scans in sustain_s of each scan's score as a share of the class threshold "
                                 "(capped at 1; 0 in a scan that did not see it at keep_alive_ratio or more)")


DEFAULT_PROFILE = "default"
PROFILE_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class ClassOverride(_Base):
    """A profile's change to one class rule: only the keys it gives change, the others keep the base rule's."""

    enabled: bool | None = Field(None, description="report this class while the profile is active")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="score threshold while the profile is active; "
                                    "an explicit null means the model manifest's")
    min_area: float | None = Field(None, ge=0.0, le=1.0, description="smallest box area as a fraction of the frame")
    max_area: float | None = Field(None, gt=0.0, le=1.0, description="largest box area as a fraction of the frame")


class Profile(_Base):
    """A named variant of these rules that the centre switches to (command `profile`), e.g. a rainstorm plan that
    scans more often and reports fainter ponding. Only what it names changes."""

    description: str | None = Field(None, description="what the profile is for (shown to operators)")
    scan_interval_s: float | None = Field(None, gt=0, description="replaces the camera's scan_interval_s (site "
                                          "file) while the profile is active")
    classes: dict[str, ClassOverride] = Field(default_factory=dict, description="per-class changes by class name")


def _merge_class(base: "ClassRule | None", override: ClassOverride) -> "ClassRule":
    """The class rule in force under a profile: the base rule (or the defaults) with the keys the profile set."""
    data = base.model_dump() if base is not None else {}
    for key in override.model_fields_set:
        value = getattr(override, key)
        if value is not None or key == "threshold":  # threshold: null = back to the manifest's
            data[key] = value
    return ClassRule.model_validate(data)


class Rules(_Base):
    """What one camera watches for and how sure it must be."""

    camera: str | None = Field(None, description="the camera these rules are for (checked against the site)")
    zones: list[Zone] = Field(default_factory=list, description="where incidents count; empty = the whole frame")
    classes: dict[str, ClassRule] = Field(default_factory=dict, description="per-class overrides by class name")
    persistence: Persistence = Field(default_factory=Persistence)
    resolve_after_s: float = Field(60.0, gt=0, description="gone this long → resolved. Longer survives long "
                                   "occlusions; shorter closes cases sooner.")
    hidden_hold_s: float = Field(600.0, ge=0, description="while something stands in front of an open incident's "
                                 "place (a lorry stopped over a puddle: most of the ground around it changed), up to "
                                 "this long does not count towards `resolve_after_s`, so the case neither resolves nor "
                                 "comes back as a second one when the lorry drives on; 0 = off")
    update_interval_s: float = Field(300.0, gt=0, description="at most one `updated` per incident this often")
    match_iou: float = Field(0.3, gt=0, le=1, description="image-box IoU that makes two sightings one incident "
                             "(cameras without ground calibration)")
    tiles: list[tuple[float, float, float, float]] = Field(
        default_factory=list, description="[x0, y0, x1, y1] rectangles (normalised) also scanned as crops at up to "
        "native resolution, for small far things (a manhole 40 m away is a few pixels once the whole frame is "
        "shrunk to the model's input); each tile costs one more inference per scan. Let neighbouring tiles "
        "overlap by about the size of a far thing: a box cut by a tile's edge gives way to another view's uncut "
        "box that shows the thing going on past the cut (by a quarter of the cut box's size or more), and without "
        "one it sees only part of the thing; a box the edge only trims keeps its own score")
    profiles: dict[str, Profile] = Field(default_factory=dict, description="named variants the centre can switch "
                                         "to (command `profile`); `default` (reserved) means the rules above as they are")

    @field_validator("tiles")
    @classmethod
    def _tiles(cls, v: list[tuple[float, float, float, float]]) -> list[tuple[float, float, float, float]]:
        for i, (x0, y0, x1, y1) in enumerate(v):
            if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
                raise ValueError(f"tiles[{i}] {[x0, y0, x1, y1]}: need 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 "
                                 "(normalised image coordinates)")
        return v

    @field_validator("profiles")
    @classmethod
    def _profiles(cls, v: dict[str, Profile], info: ValidationInfo) -> dict[str, Profile]:
        for name, profile in v.items():
            if name == DEFAULT_PROFILE:
                raise ValueError(f"{name!r} is reserved: it means these rules without any profile")
            if not re.match(PROFILE_NAME, name):
                raise ValueError(f"profile name {name!r} must be 1-64 of [A-Za-z0-9_-]")
            for cname, override in profile.classes.items():
                try:
                    _merge_class((info.data.get("classes") or {}).get(cname), override)
                except ValidationError as e:
                    msg = "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())
                    raise ValueError(f"{name}.classes.{cname}: {msg}") from None
        return v

    def with_profile(self, name: str) -> "Rules":
        """These rules as they stand under profile `name`: its class changes merged in key by key. A profile this
        file does not define (and `default`) changes nothing, so one box-wide switch fits every camera."""
        profile = self.profiles.get(name)
        if profile is None or not profile.classes:
            return self
        classes = dict(self.classes)
        for cname, override in profile.classes.items():
            classes[cname] = _merge_class(classes.get(cname), override)
        return self.model_copy(update={"classes": classes})

    def scan_interval_s(self, profile: str) -> float | None:
        """The scan interval profile `profile` sets for this camera, None where it sets none."""
        p = self.profiles.get(profile)
        return None if p is None else p.scan_interval_s


# ------------------------------------------------------------------------------------------ site
class GeoAnchor(_Base):
    lon: float = Field(ge=-180, le=180)
    lat: float = Field(ge=-90, le=90)


class CameraPose(_Base):
    """Where the camera is and how it looks: enough to map pixels to ground without surveyed points."""

    width: int = Field(gt=0)
    height: int = Field(gt=0)
    fx: float = Field(gt=0)
    fy: float = Field(gt=0)
    cx: float
    cy: float
    height_m: float = Field(gt=0)
    tilt_deg: float = Field(gt=0, lt=90)
    heading_deg: float = 0.0
    x_m: float = 0.0
    y_m: float = 0.0


class ControlPoint(_Base):
    """One surveyed point: where it is in the image and on the ground (local metres or lon/lat, not both)."""

    image: tuple[float, float] = Field(description="[u, v] pixels in the full-resolution frame")
    ground: tuple[float, float] | None = Field(None, description="[x, y] metres east and north of the anchor")
    lonlat: tuple[float, float] | None = Field(None, description="[lon, lat] degrees, CGCS2000/WGS84")
    name: str | None = None

    @model_validator(mode="after")
    def _one_position(self) -> "ControlPoint":
        if (self.ground is None) == (self.lonlat is None):
            raise ValueError("give exactly one of `ground` (local metres) or `lonlat`")
        return self


class Calibration(_Base):
    """How pixels map to the ground: surveyed control points (>= 4, preferred) or the camera's pose."""

    anchor: GeoAnchor = Field(description="lon/lat of the local frame's origin (x east, y north, metres)")
    pose: CameraPose | None = Field(None, description="camera pose and intrinsics; used when there are no points")
    points: list[ControlPoint] = Field(default_factory=list, description="image <-> ground control points; >= 4, "
                                       "spread over the ground the camera watches, not on one line")
    image_size: tuple[int, int] | None = Field(None, description="[width, height] of the frames the points were "
                                               "taken on; frames of another size are scaled")

    @model_validator(mode="after")
    def _something(self) -> "Calibration":
        if self.pose is None and not self.points:
            raise ValueError("a calibration needs `points` (>= 4 control points) or a `pose`")
        return self


class Camera(_Base):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="topic-safe camera id")
    url: str = Field(description="rtsp://… or a file path; ${VAR} is read from the environment")
    rules: str | None = Field(None, description="rule file, relative to the site file; default rules/<id>.yaml")
    scan_interval_s: float = Field(2.0, gt=0, description="seconds between scans. Static incidents need one look "
                                   "every few seconds; faster costs CPU.")
    enabled: bool = True
    calibration: Calibration | None = None
    open_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(2.0, gt=0)
    decoder: Literal["auto", "pyav", "opencv"] = Field(
        "auto", description="how a live camera is read: pyav decodes only keyframes whenever the scan interval is "
        "at least the camera's keyframe interval (several times less CPU per camera), else every frame; opencv "
        "decodes every frame; auto = pyav where it is installed. Files (replay) are always read with OpenCV")
    rtsp_client: Literal["auto", "builtin", "ffmpeg"] = Field(
        "auto", description="who receives a PyAV camera's RTSP stream: builtin = the project's own client (RTSP over "
        "TCP, H.264/H.265, Basic/Digest auth; about a third of FFmpeg's receive CPU), ffmpeg = FFmpeg's RTSP demuxer "
        "(any codec, rtsps). auto = builtin, falling back to ffmpeg for a camera it cannot read (another codec, rtsps, "
        "a redirect...)")


class Broker(_Base):
    host: str = "127.0.0.1"
    port: int = Field(1883, gt=0, lt=65536)
    protocol: Literal["5", "3.1.1"] = "5"
    username_env: str | None = Field(None, description="environment variable holding the user name")
    password_env: str | None = Field(None, description="environment variable holding the password")
    password_file: str | None = Field(None, description="file (mode 0600) holding the password")
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    topic_prefix: str = Field("cityops", pattern=r"^[A-Za-z0-9_/-]+$")
    keepalive_s: int = Field(30, ge=2)
    camera_status_s: float = Field(60.0, ge=5, description="each camera's retained status (state, link health, "
                                   "frame age) is republished this often, and at once when its state changes")
    embedded: bool = Field(False, description="start an in-process broker on host:port (the offline demo)")
    evidence: Literal["inline", "topic", "none"] = Field("inline", description="evidence JPEG as base64 in the "
                                                         "message, on a companion topic, or not at all")


class GeoConfig(_Base):
    """Where detections land on the city's map and when two sightings are one incident."""

    grid_layer: str | None = Field(None, description="GeoJSON of unit-grid polygons (lon/lat) with `grid_code` "
                                   "(15 or 14 digits) and optional `street_code`, `community_code`; relative to "
                                   "the site file")
    inventory: str | None = Field(None, description="GeoJSON of manhole-cover points with `component_id` (16 or 17 "
                                  "digits) and optional `kind`; relative to the site file")
    merge_radius_m: float = Field(3.0, gt=0, description="sightings of one class closer than this on the ground "
                                  "are one incident, across scans, restarts and cameras")
    class_merge_radius_m: dict[str, float] = Field(default_factory=lambda: {"ponding": 5.0, "illegal_structure": 5.0},
                                                   description="per-class overrides of merge_radius_m")
    other_class_m: float = Field(1.5, ge=0, description="a candidate this close to an open incident of another class "
                                 "opens nothing while that one is open: one thing read as two classes (a puddle seen "
                                 "as a garbage pile from the second camera) is one case. 0 turns it off")
    may_share_place: list[str] = Field(default_factory=lambda: ["manhole_open", "manhole_cover"],
                                       description="classes exempt from other_class_m: things that really lie inside "
                                       "another (an open manhole in a puddle)")
    component_match_radius_m: float = Field(2.0, gt=0, description="an open manhole this close to an inventory "
                                            "cover carries that cover's component id")
    off_inventory_open_threshold: float | None = Field(
        None, gt=0, le=1, description="for a complete inventory: an open manhole farther than "
        "component_match_radius_m from every inventory cover (a drain grate or dark patch where the city has no "
        "cover) needs at least this score to open a case; below it, it may only keep one open. Unset: the class "
        "threshold, as anywhere. Needs `inventory`")
    cover_sized_water_m: float = Field(
        1.25, ge=0, description="a ponding box no wider and no deeper on the ground than this, centred on an "
        "inventory cover (within half of it plus the point's accuracy), is that cover read as water — a light-grey "
        "cover shines like a puddle — and counts for nothing; a real puddle around a cover is wider. Acts only with "
        "`inventory`; 0 turns it off")
    ground_point: dict[str, Literal["bottom", "centre"]] = Field(
        default_factory=lambda: {"ponding": "centre", "manhole_open": "centre", "manhole_cover": "centre"},
        description="which point of the box touches the ground, per class; default bottom (bottom-centre)")
    base_depth_m: dict[str, float] = Field(
        default_factory=lambda: {"illegal_structure": 1.5, "material_pile": 0.6, "garbage_pile": 0.4},
        description="for upright things read at the box's bottom edge: how far behind that edge (away from the "
                    "camera, on the ground) the middle of the footprint lies — about half the thing's depth. The "
                    "bottom edge is the nearest corner, so without it a 3 m deep shed lands 1.5 m too near")
    gcj02: bool = Field(False, description="also give GCJ-02 lon/lat (consumer maps in China) in messages")
    projected_crs: str | None = Field(None, description="also give x/y in this projected CRS, e.g. EPSG:4549")

    @model_validator(mode="after")
    def _bar_needs_inventory(self) -> "GeoConfig":
        if self.off_inventory_open_threshold is not None and not self.inventory:
            raise ValueError("off_inventory_open_threshold needs `inventory` (which covers the city has)")
        return self


class OutboxConfig(_Base):
    """How much the outbox may hold while the broker is away; over it, statuses go first, then `updated` events,
    then evidence images, and `opened` / `resolved` only when nothing else is left (edge/outbox.py)."""

    max_messages: int = Field(200_000, ge=100, description="messages kept at most")
    max_mb: float = Field(2048.0, gt=0, description="megabytes of payload kept at most (evidence images count)")
    max_age_h: float = Field(168.0, gt=0, description="statuses, updates and evidence older than this are dropped; "
                             "opened/resolved never for age")


class InferenceConfig(_Base):
    """How the live box runs the model for all its cameras (edge/batcher.py): one shared session, the frames of
    several cameras in one call."""

    threads: int = Field(1, ge=1, le=64, description="onnxruntime threads per inference call. 1 costs the least CPU "
                         "per frame (the cameras already keep the cores busy); more cuts one frame's latency. "
                         "A replay always uses 2, for speed")
    max_batch: int = Field(8, ge=1, le=64, description="frames (and zone tiles) run in one call at most; frames "
                           "that wait together are batched, none is held back to fill a batch")
    flip: bool = Field(False, description="also run every frame and tile mirrored left-right and average the two "
                       "views' scores: a thing both views see keeps its score, one only a single view sees loses half. "
                       "Twice the inference per scan; on the shipped model's unseen test scenes mean AP50 0.870 -> "
                       "0.888 (README, 'The detector'). `eval-model --flip` measures a model this way")


class CommandSettings(_Base):
    """How the box answers the centre's commands (`{prefix}/{edge_id}/cmd/<command>`, see edge/commands.py)."""

    suppress_h: float = Field(24.0, ge=0, description="hours a dismissed incident's class stays suppressed at its "
                              "place when the dismiss command names none. Longer spares the seat repeated false "
                              "alarms; shorter notices sooner if something real appears there.")
    max_suppress_h: float = Field(720.0, gt=0, description="the longest suppression a dismiss may ask for")
    snapshot_timeout_s: float = Field(30.0, gt=0, description="a snapshot waits this long for the camera's next "
                                      "frame before it is answered with a failure")

    @model_validator(mode="after")
    def _order(self) -> "CommandSettings":
        if self.suppress_h > self.max_suppress_h:
            raise ValueError(f"suppress_h ({self.suppress_h}) must not exceed max_suppress_h ({self.max_suppress_h})")
        return self


class Site(_Base):
    edge_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="this box's id: MQTT client id and topic level")
    admin_code: str | None = Field(None, pattern=r"^\d{6}$", description="GB/T 2260 county code")
    utc_offset: str = Field("+08:00", pattern=r"^[+-]\d{2}:\d{2}$")
    model: str = Field("models/cityops_det_n416.onnx", description="ONNX model (manifest beside it), relative to "
                       "the project root or absolute")
    state_dir: str = Field("var", description="SQLite state (incidents, outbox), relative to the site file")
    broker: Broker = Field(default_factory=Broker)
    geo: GeoConfig = Field(default_factory=GeoConfig)
    commands: CommandSettings = Field(default_factory=CommandSettings)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    cameras: list[Camera] = Field(min_length=1)

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, v: list[Camera]) -> list[Camera]:
        ids = [c.id for c in v]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"camera ids must be unique, repeated: {dup}")
        return v


# --------------------------------------------------------------------------------------- loading
def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best-effort line number of a key path in YAML text (compose tree walk)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next(((k, v) for k, v in node.value if k.value == part), None)
            if nxt is None:
                break
            line, node = nxt[0].start_mark.line + 1, nxt[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _loc_text(loc: tuple[Any, ...]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def read_yaml(path: str | Path) -> tuple[str, Any]:
    """A YAML file's text (for the line numbers of later errors) and data; a missing, unreadable or malformed
    file is one ConfigError naming file(:line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return text, yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: malformed YAML: {getattr(e, 'problem', e)}") from None


def load_yaml_model(path: Path, model: type[BaseModel]) -> Any:
    """Read a YAML file into `model`; every problem becomes one ConfigError line naming file:line and key."""
    path = Path(path)
    text, data = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            ln = _line_of(text, loc)
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check the spelling; see the JSON Schema)"
            lines.append(f"{path}{f':{ln}' if ln else ''}: {_loc_text(loc)}: {msg}")
        raise ConfigError("\n".join(lines)) from None


def load_site(path: Path) -> Site:
    return load_yaml_model(path, Site)


def rules_path(site_path: Path, cam: Camera) -> Path:
    base = Path(site_path).resolve().parent
    if cam.rules:
        p = Path(cam.rules)
        return p if p.is_absolute() else (base / p)
    for cand in (base / "rules" / f"{cam.id}.yaml", base.parent / "rules" / f"{cam.id}.yaml"):
        if cand.exists():
            return cand
    return base / "rules" / f"{cam.id}.yaml"


def load_rules(path: Path) -> Rules:
    return load_yaml_model(path, Rules)


def expand_env(value: str, where: str) -> str:
    """Fill ${VAR} from the environment; a missing variable is a ConfigError naming it (not its value)."""
    def sub(m: re.Match[str]) -> str:
        v = os.environ.get(m.group(1))
        if v is None:
            raise ConfigError(f"{where}: environment variable {m.group(1)} is not set")
        return v

    return _ENV.sub(sub, value)


def mask_url(url: str) -> str:
    """rtsp://user:secret@host/… → rtsp://user:***@host/… (also for unexpanded ${VAR})."""
    return re.sub(r"(://[^:/@]+:).*@", r"\1***@", url)  # greedy: a stray @ in the password stays hidden


def read_secret_file(path: Path, where: str) -> str:
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError(f"{where}: secret file {p} not found") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{where}: secret file {p} must not be readable by group/others (chmod 600)")
    return p.read_text(encoding="utf-8").strip()


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas of the site and rule files, for editors."""
    return {"site.schema.json": Site.model_json_schema(), "rules.schema.json": Rules.model_json_schema()}
