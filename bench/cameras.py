"""How many cameras does one box hold, and at what CPU cost per camera? Ours vs. what a user would otherwise do.

    python bench/cameras.py --cameras N --seconds S [--warmup W] [--baseline] [--bare] [--model M] [--rounds R] [--json]
    python bench/cameras.py --find-max [--cameras START] [--max-cameras M] --seconds S [--json]

Starts a GStreamer RTSP server (tests/rtsp_server.py, Debian's /usr/bin/python3) serving N cameras, each a
1080p25 H.264 clip (GOP 50, ~4 Mbit/s, a moving test pattern with temporal noise so it decodes like real
footage; made with ffmpeg at run time in a temp dir and cached there), a Mosquitto broker (the production
config, when mosquitto is installed), and then, alternating in one run (`--rounds` times):

- **ours**: the runtime (`EdgeApp.run_live`, every camera at a 2 s scan interval, the shipped model, default
  rules, MQTT) in a child process;
- **baseline** (`--baseline`): ultralytics' streaming predict on the same ONNX model and streams
  (`YOLO(onnx).predict(source=<.streams file>, stream=True, vid_stride=fps * scan interval, rect=False)`), in
  a child process;
- **bare** (`--bare`): the floor, a thread per camera demuxing RTSP/TCP with PyAV, decoding keyframes only and
  running the model on the due one, with nothing else (no rules, geo, incident book, outbox, MQTT).

Each child runs `--warmup` seconds first (opens, GOP measurement, arenas), then `--seconds` measured. Only the
child's own CPU counts (psutil on its pid, user + system; the server and the broker are other processes).
Figures per phase: CPU seconds per camera-hour and per scan, resident memory per camera (RSS growth from the
loaded and once-run model to the end of the run, divided by N), scan lag p50/p95 (a frame's capture time to its detections
done), scans delivered vs due, and (ours) the CPU shares of decode (reader threads), inference (CPU inside
`Detector.detect` on the scanning threads plus the native threads: onnxruntime's pool) and everything else.

A camera count is **held** when scan lag p95 <= the scan interval and >= 90 % of the due scans were made.
`--find-max` doubles N from `--cameras` until one is not held, then bisects: the largest N held (ours only).

With `--json` the last line is one JSON object: cameras, scan_interval_s, scan_lag_p50_s, scan_lag_p95_s,
cpu_s_per_camera_hour, cpu_s_per_scan, rss_mb_per_camera, scans_ratio, held, shares, load_avg; with
`--baseline` also baseline_* and cpu_ratio_baseline_over_ours. Machines are shared and noisy: compare ratios
measured in one run; absolute figures are for orientation (see bench/README.md).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

MODEL = ROOT / "models" / "cityops_det_n416.onnx"
FPS, GOP, BITRATE, SIZE = 25, 50, "4M", (1920, 1080)
EDGE, EDGE_PW = "bench-edge", "bench-Edge-pw-7731"


# ------------------------------------------------------------------------------------------- media
def make_clip(seconds: int = 8, codec: str = "h264") -> Path:
    """The 1080p25 noisy test clip, made once per parameter set in the temp dir (never committed). `codec` h265
    encodes the same picture with x265 at the same bitrate and GOP (closed GOPs: IDR keyframes)."""
    from fixtures_rtsp import encoder_args  # the test clips' encoder choices (tests/ is on the path)

    tag = "" if codec == "h264" else codec
    key = hashlib.sha1(f"{SIZE}{FPS}{GOP}{BITRATE}{seconds}v1{tag}".encode()).hexdigest()[:10]
    d = Path(tempfile.gettempdir()) / "cityops-bench-clips"
    d.mkdir(exist_ok=True)
    out = d / f"cam1080p{'-' + tag if tag else ''}-{key}.mp4"
    if out.is_file():
        return out
    w, h = SIZE
    tmp = out.with_suffix(".part.mp4")
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate={FPS}:duration={seconds}",
           "-vf", "noise=alls=14:allf=t",  # temporal noise: every frame differs, like a real sensor
           *encoder_args(codec, GOP), "-b:v", BITRATE, "-maxrate", BITRATE, "-bufsize", "8M",
           "-g", str(GOP), "-keyint_min", str(GOP), "-sc_threshold", "0", "-bf", "0",
           "-pix_fmt", "yuv420p", "-an", str(tmp)]
    subprocess.run(cmd, check=True, timeout=600)
    tmp.rename(out)
    return out


def announce(mark: str) -> None:
    """A child's mark: tell the parent, then wait until it has sampled our CPU and memory. A child that exits
    right after its last mark would otherwise be sampled as a zombie, with no memory (RSS 0)."""
    print(f"MARK {mark}", flush=True)
    sys.stdin.readline()


# ------------------------------------------------------------------------------------ child: ours
def _thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each thread of this process, by native thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def child_ours(a: argparse.Namespace) -> int:
    import logging

    from edge.app import EdgeApp, load_everything

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("edge.app").setLevel(logging.ERROR)  # "no rule file" per camera: expected here
    loaded = load_everything(Path(a.site))
    app = EdgeApp(loaded, state_dir=Path(a.state))
    lock = threading.Lock()
    scans: list[tuple[float, float]] = []        # (done wall time, lag s)
    seen: set[str] = set()                       # cameras that made a scan
    infer_cpu: dict[int, float] = {}             # native tid → CPU s of pre/post-processing on the camera threads
    from edge.batcher import SharedDetector

    det = loaded.detector
    detect = det.detect
    shared_detect = SharedDetector.detect_tiled

    def timed_detect(self: Any, *args: Any, **kw: Any) -> Any:
        c0 = time.thread_time()  # this thread's CPU only: the wait for the inference thread costs nothing
        try:
            return shared_detect(self, *args, **kw)
        finally:
            tid = threading.get_native_id()
            with lock:
                infer_cpu[tid] = infer_cpu.get(tid, 0.0) + time.thread_time() - c0

    SharedDetector.detect_tiled = timed_detect  # type: ignore[method-assign]
    process = app.process

    def timed_process(frame: Any) -> Any:
        try:
            return process(frame)
        finally:
            now = time.time()
            with lock:
                scans.append((now, now - frame.ts))
                seen.add(frame.camera_id)

    app.process = timed_process  # type: ignore[method-assign]
    marks: dict[str, Any] = {}
    ended = threading.Event()

    def mark(name: str) -> None:
        py = {t.native_id: t.name for t in threading.enumerate()}
        with lock:
            marks[name] = dict(wall=time.time(), threads=_thread_cpu(), names=py, infer=dict(infer_cpu),
                               batching=app.detector.stats() if hasattr(app.detector, "stats") else None)
        announce(name)

    def clock() -> None:
        # every camera scanning first (the test server sets its mounts up one after the other), then the warm-up
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with lock:
                if len(seen) == len(loaded.cameras):
                    break
            time.sleep(0.2)
        with lock:
            scanning.append(len(seen))
        announce(f"all-scanning {time.monotonic() - t_start:.1f}")
        time.sleep(a.warmup)
        mark("warm")
        with lock:
            scans_at_warm.append(len(scans))
        time.sleep(a.seconds)
        mark("end")
        ended.set()

    import numpy as np

    detect(np.zeros((SIZE[1], SIZE[0], 3), np.uint8))  # onnxruntime's arenas: the process's, not a camera's
    mark("loaded")
    t_start = time.monotonic()
    scans_at_warm: list[int] = []
    scanning: list[int] = []  # cameras that had made a scan when the warm-up began
    threading.Thread(target=clock, daemon=True).start()
    threading.Thread(target=lambda: (ended.wait(), app.stop_event.set()), daemon=True).start()
    app.run_live(duration_s=None, install_signals=False)
    w, e = marks["warm"], marks["end"]
    decode = inference = native = 0.0
    for tid, cpu in e["threads"].items():
        used = cpu - w["threads"].get(tid, 0.0)
        name = e["names"].get(tid) or w["names"].get(tid)
        if name is None:
            native += used  # onnxruntime's pool (and any other native thread)
        elif name.startswith(("pyav-", "rtsp-")):
            decode += used
        elif name == "inference":  # the shared detector's thread: session.run for every camera's batch
            native += used
    inference = native + sum(v - w["infer"].get(t, 0.0) for t, v in e["infer"].items())
    window = [lag for done, lag in scans if w["wall"] <= done <= e["wall"]]
    b0, b1 = w["batching"] or {}, e["batching"] or {}
    calls, frames = b1.get("calls", 0) - b0.get("calls", 0), b1.get("frames", 0) - b0.get("frames", 0)
    Path(a.stats).write_text(json.dumps(dict(lags=window, decode_cpu_s=decode, inference_cpu_s=inference,
                                             mean_batch=round(frames / calls, 2) if calls else None,
                                             cameras_scanning=scanning[0] if scanning else None)))
    return 0


# -------------------------------------------------------------------------------- child: bare loop
def child_bare(a: argparse.Namespace) -> int:
    """The floor: per camera a thread that demuxes over RTSP/TCP, decodes keyframes only, converts the due one and
    runs the model on it (one shared session, one frame per call); no rules, geo, incident book, outbox or MQTT."""
    import av
    import numpy as np

    from edge.detector import Detector
    from edge.ingest import to_bgr

    det = Detector(a.model, intra_op_num_threads=1)
    det.detect(np.zeros((SIZE[1], SIZE[0], 3), np.uint8))
    urls = Path(a.streams).read_text().split()
    lock = threading.Lock()
    scans: list[tuple[float, float]] = []
    stop = threading.Event()
    seen: set[str] = set()

    def camera(url: str) -> None:
        try:
            read_camera(url)
        except Exception:  # into the child's log: a camera that dies here would otherwise just make no scans
            import traceback
            traceback.print_exc()

    def read_camera(url: str) -> None:
        with av.open(url, options={"rtsp_transport": "tcp", "fpsprobesize": "1"}, timeout=(30, 5)) as c:
            stream = c.streams.video[0]
            stream.codec_context.thread_count = 1
            stream.codec_context.skip_frame = "NONKEY"
            due = 0.0
            for packet in c.demux(stream):
                if stop.is_set():
                    return
                if not packet.is_keyframe:
                    continue
                for vf in packet.decode():
                    now = time.time()
                    if now + 0.5 * a.scan_interval < due:
                        continue
                    due = max(due + a.scan_interval, now)
                    det.detect(to_bgr(vf))
                    done = time.time()
                    with lock:
                        scans.append((done, done - now))
                        seen.add(url)

    announce("loaded")
    for u in urls:
        threading.Thread(target=camera, args=(u,), daemon=True).start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and len(seen) < len(urls):
        time.sleep(0.2)
    time.sleep(a.warmup)
    w = time.time()
    announce("warm")
    time.sleep(a.seconds)
    e = time.time()
    announce("end")
    stop.set()
    with lock:
        window = [lag for done, lag in scans if w <= done <= e]
    Path(a.stats).write_text(json.dumps(dict(lags=window)))
    os._exit(0)


# -------------------------------------------------------------------------------- child: baseline
def child_baseline(a: argparse.Namespace) -> int:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import cv2

    ts_of: dict[int, tuple[Any, float]] = {}  # id(image) → (image, capture time); the image keeps its id unique
    lock = threading.Lock()
    Base = cv2.VideoCapture

    class StampedCapture:
        """cv2.VideoCapture that notes when each retrieved frame was captured (for the scan lag)."""

        def __init__(self, *args: Any, **kw: Any) -> None:
            self._cap = Base(*args, **kw)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._cap, name)

        def retrieve(self, *args: Any, **kw: Any) -> Any:
            ok, im = self._cap.retrieve(*args, **kw)
            if ok and im is not None:
                with lock:
                    ts_of[id(im)] = (im, time.time())
                    if len(ts_of) > 4096:
                        ts_of.pop(next(iter(ts_of)))
            return ok, im

        def read(self, *args: Any, **kw: Any) -> Any:
            return self.retrieve() if self._cap.grab() else (False, None)

    cv2.VideoCapture = StampedCapture  # type: ignore[misc]
    from ultralytics import YOLO

    import numpy as np

    from edge.manifest import load_manifest, manifest_path_for

    spec = load_manifest(manifest_path_for(a.model), verify_sha256=False).input
    hw = (spec.height, spec.width)  # the model's fixed input, as ours letterboxes to it
    model = YOLO(str(a.model), task="detect")
    model.predict(np.zeros((SIZE[1], SIZE[0], 3), np.uint8), imgsz=hw, device="cpu", verbose=False, rect=False)
    scans: list[tuple[float, float]] = []
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        marks[name] = time.time()
        announce(name)

    mark("loaded")
    t_warm = t_end = None  # from the first result on: ultralytics opens the streams one after the other first
    warm_done = False
    stride = max(1, round(FPS * a.scan_interval))
    for r in model.predict(source=a.streams, stream=True, vid_stride=stride, imgsz=hw, device="cpu", rect=False,
                           verbose=False):
        now = time.time()
        with lock:
            hit = ts_of.pop(id(r.orig_img), None)
        if hit is not None:
            scans.append((now, now - hit[1]))
        mono = time.monotonic()
        if t_warm is None:
            t_warm = mono + a.warmup
            t_end = t_warm + a.seconds
        if not warm_done and mono >= t_warm:
            warm_done = True
            mark("warm")
        if mono >= t_end:
            break
    mark("end")
    window = [lag for done, lag in scans if marks.get("warm", 1e18) <= done <= marks["end"]]
    Path(a.stats).write_text(json.dumps(dict(lags=window)))
    os._exit(0)  # ultralytics' stream threads are not daemonic everywhere; the run is over


# ------------------------------------------------------------------------------------------ parent
def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))], 3)


def run_phase(kind: str, n: int, a: argparse.Namespace, work: Path, urls: list[str], broker_port: int | None
              ) -> dict[str, Any]:
    """One child, measured: CPU and RSS by psutil at its marks, lags and shares from its stats file."""
    import psutil

    stats = work / f"{kind}-{n}-{time.monotonic_ns()}.json"
    env = dict(os.environ, BENCH_EDGE_USER=EDGE, BENCH_EDGE_PASS=EDGE_PW, PYTHONUNBUFFERED="1")
    common = ["--warmup", str(a.warmup), "--seconds", str(a.seconds), "--stats", str(stats),
              "--scan-interval", str(a.scan_interval), "--model", str(a.model)]
    if kind == "ours":
        state = work / f"state-{time.monotonic_ns()}"
        site = write_site(work, urls, a.scan_interval, broker_port, a.decoder, a.model, a.rtsp_client)
        cmd = [sys.executable, __file__, "--child", "ours", "--site", str(site), "--state", str(state), *common]
    else:  # bare, baseline: the camera URLs in a .streams file
        streams = work / "cams.streams"
        streams.write_text("\n".join(urls) + "\n")
        cmd = [sys.executable, __file__, "--child", kind, "--streams", str(streams), *common]
        # RTP over TCP as ours does (OpenCV's default is UDP): the same transport for every side
        env["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp"
    log_path = work / f"{kind}-{n}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT,
                                env=env)
        ps = psutil.Process(proc.pid)
        seen: dict[str, tuple[float, float]] = {}
        assert proc.stdout is not None and proc.stdin is not None
        limit = time.monotonic() + a.warmup + a.seconds + 400
        for line in proc.stdout:
            if line.startswith("MARK "):
                ct = ps.cpu_times()
                seen[line.split()[1]] = (ct.user + ct.system, ps.memory_info().rss / 2**20)
                try:  # sampled: the child may go on (see announce)
                    proc.stdin.write("\n")
                    proc.stdin.flush()
                except OSError:
                    pass
            if time.monotonic() > limit:
                break
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if not {"loaded", "warm", "end"} <= seen.keys() or not stats.exists():
        tail = log_path.read_text()[-3000:]
        raise SystemExit(f"bench: the {kind} run with {n} cameras did not finish; its log ends:\n{tail}")
    st = json.loads(stats.read_text())
    cpu = seen["end"][0] - seen["warm"][0]
    lags = st["lags"]
    if not lags:
        tail = log_path.read_text()[-3000:]
        raise SystemExit(f"bench: the {kind} run with {n} cameras made no scan in its measured window; its log "
                         f"ends:\n{tail}")
    due = n * a.seconds / a.scan_interval
    out = dict(cameras=n, cpu_s=round(cpu, 2), scans=len(lags), scans_ratio=round(len(lags) / due, 3),
               cpu_s_per_camera_hour=round(cpu / n * 3600 / a.seconds, 1),
               cpu_s_per_scan=round(cpu / len(lags), 4) if lags else None,
               rss_mb=round(seen["end"][1], 1),
               rss_mb_per_camera=round(max(0.0, seen["end"][1] - seen["loaded"][1]) / n, 1),
               scan_lag_p50_s=pct(lags, 0.5), scan_lag_p95_s=pct(lags, 0.95), load_avg=load_avg())
    out["held"] = bool(lags) and out["scan_lag_p95_s"] <= a.scan_interval and out["scans_ratio"] >= 0.9
    if st.get("cameras_scanning") is not None:
        out["cameras_scanning"] = st["cameras_scanning"]
        if st["cameras_scanning"] < n:  # a figure over fewer cameras than asked for says nothing: say so
            out["held"] = False
            print(f"bench: only {st['cameras_scanning']} of {n} cameras were scanning when the measurement began "
                  f"(opens failed or took over 180 s; --keep keeps the log)", file=sys.stderr, flush=True)
    if kind == "ours" and cpu > 0:
        dec, inf = st["decode_cpu_s"], st["inference_cpu_s"]
        out["shares"] = dict(decode=round(dec / cpu, 3), inference=round(inf / cpu, 3),
                             other=round(max(0.0, 1 - (dec + inf) / cpu), 3))
        out["mean_batch"] = st.get("mean_batch")
    return out


def write_site(work: Path, urls: list[str], scan_s: float, broker_port: int | None, decoder: str,
               model: Path = MODEL, rtsp_client: str = "auto") -> Path:
    import yaml

    site = {"edge_id": EDGE, "model": str(model), "state_dir": str(work / "state"),
            "broker": {"host": "127.0.0.1", "port": broker_port or 9, "protocol": "5",
                       "username_env": "BENCH_EDGE_USER", "password_env": "BENCH_EDGE_PASS"},
            # open timeout: the test server sets mounts up one after another, ~2 s each (a GOP) when many open
            "cameras": [{"id": f"cam{i + 1}", "url": u, "scan_interval_s": scan_s, "decoder": decoder,
                         "rtsp_client": rtsp_client, "open_timeout_s": 30}
                        for i, u in enumerate(urls)]}
    p = work / f"site-{len(urls)}.yaml"
    p.write_text(yaml.safe_dump(site, sort_keys=False))
    return p


class Rig:
    """The RTSP server (and broker) for up to `n` cameras, kept across phases and restarted for a larger n."""

    def __init__(self, work: Path, clip: Path) -> None:
        self.work, self.clip = work, clip
        self.server: Any = None
        self.n = 0
        self.broker: Any = None

    def start_broker(self) -> int | None:
        if shutil.which("mosquitto") is None:
            print("bench: mosquitto not installed: the runtime runs without a broker (events wait in the outbox)",
                  file=sys.stderr)
            return None
        from fixtures_mqtt import Mosquitto

        self.broker = Mosquitto(self.work / "broker", {EDGE: EDGE_PW}).start()
        return self.broker.port

    def urls(self, n: int) -> list[str]:
        from fixtures_rtsp import RtspServer

        if self.server is None or self.n < n:
            if self.server is not None:
                self.server.stop()
            self.server = RtspServer({f"cam{i + 1}": self.clip for i in range(n)})
            self.server.start()
            self.n = n
        return [self.server.url(f"cam{i + 1}") for i in range(n)]

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.broker is not None:
            self.broker.stop()


def show(label: str, r: dict[str, Any]) -> None:
    shares = r.get("shares")
    sh = (f", shares decode {shares['decode']:.0%} / inference {shares['inference']:.0%} / other "
          f"{shares['other']:.0%}") if shares else ""
    print(f"{label:>8} N={r['cameras']:>3}: {r['cpu_s_per_camera_hour']:>7.1f} CPU-s/camera-h, "
          f"{r['cpu_s_per_scan'] or 0:.3f} CPU-s/scan, {r['rss_mb_per_camera']:.1f} MB/camera (RSS {r['rss_mb']:.0f}), "
          f"lag p50 {r['scan_lag_p50_s']} p95 {r['scan_lag_p95_s']} s, scans {r['scans_ratio']:.0%} of due, "
          f"{'held' if r['held'] else 'NOT held'}{sh}  [load {r['load_avg']}]", flush=True)


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(vals), 3) if vals else None


def parent(a: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="cityops-bench-"))
    print(f"bench: load before {load_avg()}, {os.cpu_count()} CPUs; making the clip", file=sys.stderr, flush=True)
    clip = make_clip(codec=a.codec)
    rig = Rig(work, clip)
    try:
        port = rig.start_broker()
        if a.find_max:
            result = find_max(a, rig, work, port)
        else:
            urls = rig.urls(a.cameras)
            ours: list[dict[str, Any]] = []
            base: list[dict[str, Any]] = []
            bare: list[dict[str, Any]] = []
            for _ in range(a.rounds):
                ours.append(run_phase("ours", a.cameras, a, work, urls, port))
                show("ours", ours[-1])
                if a.bare:
                    bare.append(run_phase("bare", a.cameras, a, work, urls, port))
                    show("bare", bare[-1])
                if a.baseline:
                    base.append(run_phase("baseline", a.cameras, a, work, urls, port))
                    show("baseline", base[-1])
            result = dict(ours[-1]) if len(ours) == 1 else {
                **ours[-1], **{k: median_of(ours, k) for k in ("cpu_s_per_camera_hour", "cpu_s_per_scan",
                                                               "rss_mb_per_camera", "scan_lag_p50_s",
                                                               "scan_lag_p95_s", "scans_ratio")}}
            result["held"] = all(r["held"] for r in ours)
            if base:
                b = {k: median_of(base, k) for k in ("cpu_s_per_camera_hour", "cpu_s_per_scan", "rss_mb_per_camera",
                                                     "scan_lag_p50_s", "scan_lag_p95_s", "scans_ratio")}
                result.update({f"baseline_{k}": v for k, v in b.items()})
                result["baseline_held"] = all(r["held"] for r in base)
                ratios = [x["cpu_s_per_camera_hour"] / y["cpu_s_per_camera_hour"] for x, y in zip(base, ours)]
                result["cpu_ratio_baseline_over_ours"] = round(statistics.median(ratios), 2)
                print(f"baseline / ours CPU per camera: {result['cpu_ratio_baseline_over_ours']}x "
                      f"(per round: {[round(r, 2) for r in ratios]})", flush=True)
            if bare:
                result["bare_cpu_s_per_camera_hour"] = median_of(bare, "cpu_s_per_camera_hour")
                result["bare_scan_lag_p95_s"] = median_of(bare, "scan_lag_p95_s")
                result["cpu_ratio_ours_over_bare"] = round(statistics.median(
                    [x["cpu_s_per_camera_hour"] / y["cpu_s_per_camera_hour"] for x, y in zip(ours, bare)]), 2)
                print(f"ours / bare loop CPU per camera: {result['cpu_ratio_ours_over_bare']}x", flush=True)
            result["rounds"] = a.rounds
        result.update(scan_interval_s=a.scan_interval, seconds=a.seconds, warmup_s=a.warmup, decoder=a.decoder,
                      codec=a.codec,
                      rtsp_client=a.rtsp_client,
                      model=a.model.name, load_avg=load_avg(), cpus=os.cpu_count())
    finally:
        rig.close()
        if a.keep:
            print(f"bench: logs and stats kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if a.json:
        print(json.dumps(result))
    return 0


def find_max(a: argparse.Namespace, rig: Rig, work: Path, port: int | None) -> dict[str, Any]:
    """Largest N held: double from --cameras until one fails, then bisect."""
    tried: dict[int, dict[str, Any]] = {}

    def held(n: int) -> bool:
        r = run_phase("ours", n, a, work, rig.urls(n), port)
        show("ours", r)
        tried[n] = r
        return r["held"]

    lo, hi, n = 0, None, a.cameras
    while n <= a.max_cameras:
        if held(n):
            lo, n = n, n * 2
        else:
            hi = n
            break
    hi = hi or a.max_cameras + 1
    while hi - lo > max(1, lo // 8):  # to within 1/8
        mid = (lo + hi) // 2
        if held(mid):
            lo = mid
        else:
            hi = mid
    best = tried.get(lo, {})
    print(f"largest N held at a {a.scan_interval:g} s scan: {lo}", flush=True)
    return {**best, "cameras": lo, "max_cameras_held": lo,
            "tried": {k: {"held": v["held"], "scan_lag_p95_s": v["scan_lag_p95_s"], "scans_ratio": v["scans_ratio"],
                          "cpu_s_per_camera_hour": v["cpu_s_per_camera_hour"]} for k, v in sorted(tried.items())}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=120.0, help="measured seconds per phase")
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds before measuring, per phase")
    ap.add_argument("--scan-interval", type=float, default=2.0)
    ap.add_argument("--baseline", action="store_true", help="also run the ultralytics baseline, alternating")
    ap.add_argument("--bare", action="store_true", help="also run the bare loop (keyframes-only PyAV + onnxruntime, "
                    "nothing else): what the product's rules, geo, book, outbox and MQTT add")
    ap.add_argument("--rounds", type=int, default=1, help="ours/baseline pairs; figures are their medians")
    ap.add_argument("--decoder", choices=("auto", "pyav", "opencv"), default="auto")
    ap.add_argument("--codec", choices=("h264", "h265"), default="h264", help="what the cameras send (h265: the "
                    "same clip encoded with x265, same bitrate and GOP)")
    ap.add_argument("--rtsp-client", choices=("auto", "builtin", "ffmpeg"), default="auto",
                    help="who receives our side's RTSP (the site key rtsp_client); the bare loop always uses FFmpeg's")
    ap.add_argument("--model", type=Path, default=MODEL, help="ONNX model for both sides (e.g. models/"
                    "cityops_det_n416_int8.onnx, the 8-bit copy for big boxes)")
    ap.add_argument("--find-max", action="store_true", help="largest N held (ours only)")
    ap.add_argument("--max-cameras", type=int, default=64)
    ap.add_argument("--json", action="store_true", help="last line: one JSON object")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (the children's logs) and say where")
    # internal: the measured children
    ap.add_argument("--child", choices=("ours", "baseline", "bare"), help=argparse.SUPPRESS)
    ap.add_argument("--site", help=argparse.SUPPRESS)
    ap.add_argument("--state", help=argparse.SUPPRESS)
    ap.add_argument("--streams", help=argparse.SUPPRESS)
    ap.add_argument("--stats", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child == "ours":
        return child_ours(a)
    if a.child == "baseline":
        return child_baseline(a)
    if a.child == "bare":
        return child_bare(a)
    if a.cameras < 1 or a.seconds <= 0 or a.warmup < 0 or a.rounds < 1:
        ap.error("--cameras and --rounds must be >= 1, --seconds > 0, --warmup >= 0")
    return parent(a)


if __name__ == "__main__":
    sys.exit(main())
