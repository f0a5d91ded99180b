"""Command line: `python run_edge.py [command] ...` (`run` is the default)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "cityops_det_n416.onnx"


class Progress:
    """A one-line progress bar on stderr for jobs that take minutes."""

    def __init__(self, label: str, stream=sys.stderr) -> None:
        self.label, self.stream, self.t0, self.last = label, stream, time.monotonic(), 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < 0.5:
            return
        self.last = now
        el = now - self.t0
        eta = el / done * (total - done) if done else 0
        bar = "#" * int(30 * done / max(total, 1))
        self.stream.write(f"\r{self.label} [{bar:<30}] {done}/{total} {el:5.0f}s eta {eta:4.0f}s")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def cmd_synth_dataset(a: argparse.Namespace) -> int:
    from .synth.dataset import write_dataset

    y = write_dataset(Path(a.out), a.images, a.seed, a.imgsz, a.val_fraction, a.workers, Progress("rendering"))
    print(f"wrote {y}")
    return 0


def cmd_synth_scenario(a: argparse.Namespace) -> int:
    from .synth.scenario import write_scenario

    try:
        truth = write_scenario(Path(a.out), a.seed, a.minutes, cameras=a.cameras, fps=a.fps, width=a.width,
                               height=a.height, progress=Progress("rendering clip"))
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {truth}")
    return 0


def input_shape(text: str) -> tuple[int, int]:
    """`--input HxW` (e.g. 320x512): the exported model's fixed input, each side a multiple of the stride 32."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not HEIGHTxWIDTH, e.g. 320x512") from None
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise argparse.ArgumentTypeError(f"'{text}': height and width must be positive multiples of 32")
    return h, w


def _run_model_job(job: Callable[..., Any], a: argparse.Namespace, inputs: list[str | None], doing: str) -> int:
    """`train` and `average-weights`: their input files are checked before anything runs (an hour's run must not
    end on a typo), and the errors a user can cause are one line each."""
    missing = [f for f in inputs if f and not Path(f).is_file()]
    if missing:
        print(f"error: not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        job(a, Progress)
    except ImportError as e:
        print(f"error: {doing} needs the optional extra: pip install -e '.[train]' ({e})", file=sys.stderr)
        return 2
    except ValueError as e:  # ConfigError too: a missing or malformed dataset yaml, named with its line
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from .recipe import run_recipe

    return _run_model_job(run_recipe, a, [a.data, a.init_weights], "training")


def cmd_average_weights(a: argparse.Namespace) -> int:
    from .recipe import run_average

    rc = _run_model_job(run_average, a, [*a.weights, a.data], "averaging")
    if rc == 0:
        print(f"wrote {Path(a.models_dir) / (a.name + '.onnx')} with its manifest and card")
    return rc


def cmd_measure_model(a: argparse.Namespace) -> int:
    from .recipe import measure_model, record_measurement

    model = Path(a.model)
    figures = measure_model(model, Path(a.out), Progress, a.test_images, a.test_images)
    print(f"wrote {record_measurement(model, figures)}")
    return 0


def cmd_quantize(a: argparse.Namespace) -> int:
    from .synth.scene import render, sample_scene
    from .train import quantize_int8

    src = Path(a.model)
    dst = Path(a.out) if a.out else src.with_name(src.stem + "_int8.onnx")
    # calibration frames: rendered street scenes of their own seed (never a training or test seed)
    frames = [render(sample_scene(a.seed + i, 1280, 720, n_incidents=4))[0] for i in range(a.images)]
    quantize_int8(src, dst, frames)
    print(f"wrote {dst} and its manifest")
    if not a.skip_measure:
        from .recipe import measure_model, record_measurement

        print(f"wrote {record_measurement(dst, measure_model(dst, Path(a.measure_out), Progress))}")
    return 0


def cmd_eval_model(a: argparse.Namespace) -> int:
    from .detector import ModelMismatchError
    from .evaluate import evaluate, format_table
    from .manifest import ManifestError

    try:
        res = evaluate(Path(a.model), Path(a.data), split=a.split, progress=None if a.json else Progress("evaluating"),
                       flip=a.flip)
    except (ManifestError, ModelMismatchError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps(res))
    else:
        print(format_table(res))
    return 0


def _print_event(ev) -> None:
    where = f" zone {ev.zone}" if ev.zone else ""
    print(f"[{ev.ts:8.1f}s] {ev.event:<8} {ev.incident_id}  {ev.class_name:<17} camera {ev.camera_id}{where}  "
          f"conf {ev.confidence:.2f}", flush=True)


def _load(a: argparse.Namespace, threads: int | None = None):
    from .app import load_everything
    from .config import ConfigError

    try:
        return load_everything(Path(a.site), Path(a.model) if getattr(a, "model", None) else None,
                               Path(a.rules) if getattr(a, "rules", None) else None, threads=threads)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def cmd_replay(a: argparse.Namespace) -> int:
    """Run the pipeline on recorded clips on media time: what would this camera report?"""
    import tempfile

    import yaml

    from .app import REPLAY_THREADS, EdgeApp
    from .config import ConfigError

    if a.video:
        if not Path(a.video).is_file():
            print(f"error: --video {a.video}: file not found", file=sys.stderr)
            return 2
        tmp = Path(tempfile.mkdtemp(prefix="cityops-replay-site-"))
        site = {"edge_id": "replay", "cameras": [{"id": a.camera_id, "url": str(Path(a.video).resolve()),
                                                  "scan_interval_s": a.scan_interval}]}
        (tmp / "site.yaml").write_text(yaml.safe_dump(site))
        a.site = str(tmp / "site.yaml")
    elif not a.site:
        print("error: replay needs --video FILE or --site FILE", file=sys.stderr)
        return 2
    loaded = _load(a, threads=REPLAY_THREADS)
    if loaded is None:
        return 2
    offset = 0.0
    if a.start_time:
        from datetime import datetime

        try:
            st = datetime.fromisoformat(a.start_time)
        except ValueError:
            print(f"error: --start-time {a.start_time!r}: not ISO 8601 (e.g. 2026-07-01T09:00:00+08:00)", file=sys.stderr)
            return 2
        if st.tzinfo is None:
            print("error: --start-time needs a UTC offset (e.g. +08:00)", file=sys.stderr)
            return 2
        offset = st.timestamp()
    t0 = time.monotonic()
    try:
        app = EdgeApp(loaded, replay=True, events_out=Path(a.events_out) if a.events_out else None,
                      on_event=None if a.quiet else _print_event, max_media_s=a.max_seconds, ts_offset=offset)
        s = app.run_replay()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    el = time.monotonic() - t0
    print(f"replay: {s.cameras} camera(s), {s.scans} scans in {el:.1f} s; incidents opened {s.opened}, "
          f"updated {s.updated}, resolved {s.resolved}" + (f"; events written to {a.events_out}" if a.events_out else ""))
    for cam, err in s.camera_errors.items():
        print(f"camera {cam}: {err}", file=sys.stderr)
    return 1 if s.camera_errors and s.scans == 0 else 0


def cmd_export_schema(a: argparse.Namespace) -> int:
    from .config import json_schemas

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        (out / name).write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {out / name}")
    return 0


def cmd_check(a: argparse.Namespace) -> int:
    loaded = _load(a)
    if loaded is None:
        return 2
    print(f"{a.site}: OK — edge {loaded.site.edge_id}, {len(loaded.cameras)} camera(s), model "
          f"{loaded.detector.manifest.name} {loaded.detector.manifest.version} ({len(loaded.detector.class_names)} classes)")
    loc = loaded.locator
    for cam in loaded.cameras:
        gm = loc.maps.get(cam.id)
        if gm is None:
            print(f"  {cam.id}: no ground calibration — incidents carry no lon/lat and merge by image box only")
        elif gm.source == "points":
            print(f"  {cam.id}: {len(gm.point_names)} control points, residual RMS {gm.rms_m:.2f} m, max "
                  f"{gm.max_residual_m:.2f} m (picture: run_edge.py calibrate --camera {cam.id})")
        else:
            print(f"  {cam.id}: calibrated by its pose (no surveyed points; assumed error {gm.sigma_m:.1f} m)")
    if loc.grid is not None or loc.inventory is not None:
        print(f"  geo: {len(loc.grid) if loc.grid is not None else 0} unit-grid cells, "
              f"{len(loc.inventory) if loc.inventory is not None else 0} inventory covers")
    return 0


def cmd_outbox(a: argparse.Namespace) -> int:
    """An operator's view of the outbox; safe while the runtime runs (SQLite WAL, short transactions)."""
    import time

    from .app import resolve
    from .config import ConfigError, load_site
    from .outbox import Outbox

    if a.db:
        db = Path(a.db)
    else:
        try:
            site = load_site(Path(a.site))
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        db = resolve(site.state_dir, Path(a.site).resolve().parent) / f"{site.edge_id}.sqlite"
    if not db.exists():
        print(f"error: no outbox at {db} (has the runtime run with this site?)", file=sys.stderr)
        return 2
    with Outbox(db) as ob:
        if a.requeue:
            print(f"{ob.requeue_set_aside()} message(s) put back in the queue")
        oldest = ob.oldest_created_at()
        print(f"{db}: {ob.pending_count()} message(s) waiting for the broker"
              + (f", the oldest {time.time() - oldest:.0f} s old" if oldest else ""))
        print(f"dropped by the limits: {ob.drop_counts() or 'none'}")
        rows = ob.set_aside_rows()
        print(f"refused by the broker and set aside: {len(rows)}")
        for rid, topic, reason in rows[:20]:
            print(f"  #{rid} {topic}: {reason}")
        if len(rows) > 20:
            print(f"  … and {len(rows) - 20} more")
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    if a.site is None:
        from .demo import run_demo

        return run_demo(a)
    from .app import EdgeApp

    loaded = _load(a)
    if loaded is None:
        return 2
    from .app import BrokerRefused

    app = EdgeApp(loaded, on_event=_print_event)
    try:
        s = app.run_live(duration_s=a.duration)
    except BrokerRefused as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    print(f"stopped: {s.cameras} camera(s), {s.scans} scans; incidents opened {s.opened}, updated {s.updated}, "
          f"resolved {s.resolved}; messages acknowledged {s.published}, still queued {s.pending}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run_edge.py", description="cityops-edge: city-management incidents from "
                                "street cameras, reported once over MQTT.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command")

    s = sub.add_parser("run", help="run the edge runtime (default: the bundled demo site, offline)")
    s.add_argument("--site", help="streams/<site>.yaml; without it the bundled demo runs")
    s.add_argument("--model", help="override the site's model")
    s.add_argument("--duration", type=float, help="stop after this many seconds")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("replay", help="run the pipeline on recorded clips on media time, as fast as the CPU allows")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--video", help="one clip, as camera --camera-id")
    g.add_argument("--site", help="a site whose camera urls are video files")
    s.add_argument("--rules", help="rule file for every camera (overrides the site's)")
    s.add_argument("--model", help="override the site's model")
    s.add_argument("--events-out", help="write every event as JSON lines: exactly the payloads that would be published")
    s.add_argument("--camera-id", default="cam1")
    s.add_argument("--scan-interval", type=float, default=2.0)
    s.add_argument("--max-seconds", type=float, help="stop at this media time")
    s.add_argument("--start-time", help="wall time of the clip's first frame, ISO 8601 with offset; default: media "
                   "time from the epoch (1970), which keeps replays comparable")
    s.add_argument("-q", "--quiet", action="store_true", help="do not print events as they happen")
    s.set_defaults(func=cmd_replay)

    s = sub.add_parser("export-schema", help="write the JSON Schemas of site and rule files (for editors)")
    s.add_argument("--out", default=str(ROOT / "streams"))
    s.set_defaults(func=cmd_export_schema)

    from .intake.cli import add_intake_parser

    add_intake_parser(sub)

    s = sub.add_parser("outbox", help="what waits for the broker, what the limits dropped, what the broker refused")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--site", help="the site file (its state_dir and edge id name the outbox)")
    g.add_argument("--db", help="the outbox SQLite file itself")
    s.add_argument("--requeue", action="store_true", help="put the messages the broker refused back in the queue "
                   "(after fixing the broker's ACL)")
    s.set_defaults(func=cmd_outbox)

    s = sub.add_parser("check", help="validate a whole site: files, model, zones, classes")
    s.add_argument("--site", default=str(ROOT / "streams" / "demo.yaml"))
    s.add_argument("--model")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("synth-dataset", help="render a synthetic detection dataset (ultralytics layout)")
    s.add_argument("--out", required=True)
    s.add_argument("--images", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--imgsz", type=int, default=640, help="rendered image width in pixels")
    s.add_argument("--val-fraction", type=float, default=0.1)
    s.add_argument("--workers", type=int, default=2)
    s.set_defaults(func=cmd_synth_dataset)

    s = sub.add_parser("synth-scenario", help="render a camera watching incidents come and go: MP4 + truth.json")
    s.add_argument("--out", required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--minutes", type=float, default=5.0)
    s.add_argument("--cameras", type=int, default=1)
    s.add_argument("--fps", type=float, default=5.0)
    s.add_argument("--width", type=int, default=1280)
    s.add_argument("--height", type=int, default=720)
    s.set_defaults(func=cmd_synth_scenario)

    s = sub.add_parser("train", help="generate data, train a small YOLO from scratch, export ONNX, write manifest "
                                     "and model card (needs the 'train' extra)")
    s.add_argument("--out", default="runs/train", help="working directory for data and checkpoints")
    s.add_argument("--images", type=int, default=3000)
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--epochs", type=int, default=25)
    s.add_argument("--imgsz", type=int, default=416, help="square training size")
    s.add_argument("--input", type=input_shape, metavar="HxW", help="the exported model's input, e.g. 320x512 for 16:9 "
                   "cameras (default: imgsz x imgsz)")
    s.add_argument("--batch", type=int, default=16)
    s.add_argument("--hours", type=float, help="wall-time cap; the epoch count and LR schedule are fitted to it")
    s.add_argument("--init-weights", help="continue from our own earlier checkpoint (a second stage); never downloads")
    s.add_argument("--lr0", type=float, help="AdamW learning rate; default: ultralytics' automatic choice "
                   "(AdamW 0.001 for 6 classes); a second stage: about 0.0005")
    s.add_argument("--warmup-epochs", type=float, default=3.0)
    s.add_argument("--stage-name", default="run", help="sub-folder of --out for this stage's checkpoints")
    s.add_argument("--arch", default="yolov8n.yaml", help="ultralytics architecture yaml (no weights are loaded)")
    s.add_argument("--device", default="cpu", help="cpu, or a CUDA index such as 0")
    s.add_argument("--workers", type=int, default=0, help="data-loader workers (GPU runs: 8 or more)")
    s.add_argument("--data", help="train on this dataset yaml instead of generating one")
    s.add_argument("--name", default="cityops_det_n416", help="model name: writes models/<name>.onnx")
    s.add_argument("--models-dir", default=str(ROOT / "models"))
    s.add_argument("--skip-measure", action="store_true", help="do not measure the model for its card")
    s.add_argument("--test-images", type=int, default=300, help="images in each rendered test set")
    s.add_argument("--render-px", type=int, default=640, help="size the training images are rendered at")
    s.add_argument("--val-fraction", type=float, default=0.08, help="share of the rendered images kept for val")
    s.add_argument("--model-version", default="1.0.0", help="version written to the manifest (messages carry it)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("average-weights", help="average checkpoints of one model (a stage and the one it continued "
                       "from), then export, pick thresholds and measure it as `train` does")
    s.add_argument("--weights", nargs="+", required=True, help="two or more .pt checkpoints of the same architecture")
    s.add_argument("--data", required=True, help="dataset yaml whose val split the thresholds are chosen on")
    s.add_argument("--out", default="runs/average", help="working directory (the averaged .pt, test sets)")
    s.add_argument("--imgsz", type=int, default=416, help="the size the checkpoints were trained at (recorded)")
    s.add_argument("--input", type=input_shape, metavar="HxW", help="the exported model's input (default: imgsz x imgsz)")
    s.add_argument("--arch", default="yolov8n.yaml", help="recorded in the manifest")
    s.add_argument("--name", default="cityops_det_n416", help="model name: writes models/<name>.onnx")
    s.add_argument("--models-dir", default=str(ROOT / "models"))
    s.add_argument("--model-version", default="1.0.0")
    s.add_argument("--skip-measure", action="store_true")
    s.add_argument("--test-images", type=int, default=300)
    s.set_defaults(func=cmd_average_weights)

    s = sub.add_parser("measure-model", help="measure a model on data it never saw and rewrite its model card")
    s.add_argument("--model", default=str(DEFAULT_MODEL))
    s.add_argument("--out", default="runs/measure", help="where the test sets are rendered (reused if present)")
    s.add_argument("--test-images", type=int, default=300, help="images in each rendered test set")
    s.set_defaults(func=cmd_measure_model)

    s = sub.add_parser("quantize", help="an 8-bit copy of a model for boxes with many cameras (~40 %% less CPU per "
                       "inference), measured like the float one")
    s.add_argument("--model", default=str(DEFAULT_MODEL))
    s.add_argument("--out", help="default: <model>_int8.onnx beside the model")
    s.add_argument("--images", type=int, default=64, help="rendered calibration frames")
    s.add_argument("--seed", type=int, default=61_000, help="seed of the calibration frames")
    s.add_argument("--measure-out", default="runs/measure", help="where the test sets are rendered (reused if present)")
    s.add_argument("--skip-measure", action="store_true")
    s.set_defaults(func=cmd_quantize)

    s = sub.add_parser("eval-model", help="evaluate an ONNX model with the runtime's own inference path")
    s.add_argument("--model", required=True)
    s.add_argument("--data", required=True, help="ultralytics dataset yaml (boxes or polygons)")
    s.add_argument("--split", default="val")
    s.add_argument("--json", action="store_true", help="print exactly one JSON object")
    s.add_argument("--flip", action="store_true", help="as a site with `inference.flip: true` runs it: each image "
                   "also mirrored, the two views' scores averaged (twice the inference)")
    s.set_defaults(func=cmd_eval_model)

    from .calibration import add_calibrate_parser

    add_calibrate_parser(sub)
    from .score import add_score_parser

    add_score_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_demo = args.command is None  # the demo prints its own story; logs only for warnings
    logging.basicConfig(level=logging.DEBUG if args.verbose else (logging.WARNING if quiet_demo else logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command is None:
        args = parser.parse_args(["run"])
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)
