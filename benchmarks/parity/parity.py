"""Accuracy and speed parity with ultralytics/yolov5: both trainers, the same data, model, epochs, batch, image size,
for several seeds; img/s, mAP50 and mAP50-95 per seed and mean ± spread. See README.md beside this file.

yolov5 runs unmodified (its own train.py, callbacks only for timing) under its own interpreter; yolotr runs
`yolotr train` with a recipe (configs/train/coco-yolov5.yaml by default). Every run's predictions on the val split
are also scored by both evaluators (pycocotools as yolotr does, and yolov5's val.py matching), so the table can say
whether a gap is the trainers' or the evaluators'.

    YOLOV5_DIR=/path/to/yolov5 YOLOV5_PYTHON=/path/to/yolov5-venv/bin/python \\
      python benchmarks/parity/parity.py --synth 1024,256,160,1 --models yolov5n --imgsz 160 --epochs 8 --batch 32 \\
        --seeds 0 1 2 --out runs/parity
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from evaluators import pycocotools_score, torch_device, yolotr_predictions, yolov5_score  # noqa: E402
from report import format_report, load_runs  # noqa: E402

from yolotr.data.errors import DataSpecError  # noqa: E402
from yolotr.data.spec import load_data_yaml  # noqa: E402

# name -> (yolov5's model yaml, relative to its checkout; yolotr's model yaml, relative to this repository)
MODELS = {
    "yolov5n": ("models/yolov5n.yaml", "configs/models/yolov5n.yaml"),
    "yolov5s": ("models/yolov5s.yaml", "configs/models/yolov5s.yaml"),
    "yolov5m": ("models/yolov5m.yaml", "configs/models/yolov5m.yaml"),
    # yolov5's own Transformer variant (its C3TR in the backbone's last C3) against yolotr's (its C3TR, the same place)
    "transformer": ("models/hub/yolov5s-transformer.yaml", "configs/models/yolotr-s.yaml"),
}


@dataclass
class Job:
    model: str
    trainer: str  # "yolov5" or "yolotr" (+ "-<tag>" for a variant)
    seed: int
    dir: Path

    @property
    def result_file(self) -> Path:
        return self.dir / "result.json"


def prepare_data(args: argparse.Namespace, out: Path) -> tuple[Path, Path]:
    """(yolotr shard data.yaml, YOLO folder): the synthetic set, or a given shard set or YOLO set, in both forms."""
    data = out / "data"
    shards, yolo = data / "shards", data / "yolo"
    if args.synth:
        train, val, imgsz, seed = (int(v) for v in args.synth.split(","))
        if not (shards / "data.yaml").is_file():
            _yolotr("data", "synth", "--out", shards, "--train", train, "--val", val, "--imgsz", imgsz, "--seed", seed,
                    "--workers", args.synth_workers)
        source = shards / "data.yaml"
    else:
        try:
            load_data_yaml(args.data)
            source = Path(args.data)
        except DataSpecError:  # not shards: a YOLO data.yaml, sharded once for yolotr
            if not (shards / "data.yaml").is_file():
                _yolotr("data", "shard", "--format", "yolo", "--src", args.data, "--out", shards)
            source = shards / "data.yaml"
    if not (yolo / "data.yaml").is_file():
        _yolotr("data", "export", "--format", "yolo", "--src", source, "--out", yolo)
    return source, yolo


def _yolotr(*argv) -> None:
    subprocess.run([sys.executable, "-m", "yolotr", *map(str, argv)], cwd=REPO, check=True)


def yolov5_env(args: argparse.Namespace, out: Path) -> dict:
    """yolov5 offline: no auto-installs, no font download (any TTF as Arial.ttf in its config dir)."""
    config_dir = Path(os.environ.get("YOLOV5_CONFIG_DIR") or out / "yolov5-config")
    config_dir.mkdir(parents=True, exist_ok=True)
    font = config_dir / "Arial.ttf"
    if not font.is_file():
        found = subprocess.run([args.yolov5_python, "-c", "import matplotlib, os; print(os.path.join(os.path.dirname("
                                "matplotlib.__file__), 'mpl-data', 'fonts', 'ttf', 'DejaVuSans.ttf'))"],
                               capture_output=True, text=True, check=True).stdout.strip()
        shutil.copyfile(found, font)
    return {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLOv5_AUTOINSTALL": "false",
            "YOLOV5_CONFIG_DIR": str(config_dir), "WANDB_MODE": "disabled"}


def run_yolov5(job: Job, args: argparse.Namespace, yolo: Path, env: dict, *, val_only: bool = False) -> dict:
    """yolov5's train.py (or, with val_only, only the validation of its finished run) through yolov5_run.py."""
    cfg = MODELS[job.model][0]
    train_args = ["--img", args.imgsz, "--batch", args.batch, "--epochs", args.epochs, "--data", yolo / "data.yaml",
                  "--cfg", cfg, "--weights", "", "--workers", args.workers, "--cache", "ram", "--noplots", "--noval",
                  "--device", args.device_v5, "--project", job.dir, "--name", "train", "--exist-ok",
                  "--seed", job.seed, *args.yolov5_arg]
    cmd = [args.yolov5_python, HERE / "yolov5_run.py", "--yolov5-dir", args.yolov5_dir, "--result",
           job.dir / "yolov5.json", *(["--val-only", job.dir / "train"] if val_only else []), "--", *train_args]
    _run_logged([str(c) for c in cmd], job.dir / ("val.log" if val_only else "train.log"), env)
    own = json.loads((job.dir / "yolov5.json").read_text())
    log = re.sub(r"\x1b\[[0-9;]*m", "", (job.dir / "train.log").read_text(errors="replace"))  # no colours
    # On CUDA yolov5 trains in fp16 AMP only if its AMP check passes (offline it may fail and fall back to fp32).
    amp = "passed" if "AMP: checks passed" in log else ("failed" if "AMP: checks failed" in log else "n/a")
    return {"images_per_s": own["images_per_s"], "map50": own["map50"], "map": own["map"],
            "predictions": own["val"]["predictions"], "val_py": own["val"], "results_csv": own["results_csv"],
            "nms_time_limit_warnings": own["nms_time_limit_warnings"], "amp_check": amp}


def run_yolotr(job: Job, args: argparse.Namespace, shards: Path, variant: list[str]) -> dict:
    overrides = [f"model={MODELS[job.model][1]}", f"data={shards}", f"run.dir={job.dir / 'train'}",
                 f"run.seed={job.seed}", f"train.epochs={args.epochs}", f"train.batch_size={args.batch}",
                 f"train.imgsz={args.imgsz}", f"train.num_workers={args.workers}", "val.every_epochs=0",
                 "wandb.enabled=false", "train.progress_bar=false", "checkpoint.every=1000000", *variant]
    cmd = [sys.executable, "-m", "yolotr", "train", "--config", str(args.recipe), *overrides]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(args.yolotr_repo)}
    _run_logged(cmd, job.dir / "train.log", env, cwd=args.yolotr_repo)
    records = [json.loads(line) for line in (job.dir / "train" / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if r["kind"] == "val"][-1]
    spec = load_data_yaml(shards)
    predictions = yolotr_predictions(job.dir / "train" / "weights" / "last.safetensors", spec, args.imgsz,
                                     job.dir / "predictions.json", torch_device())
    waits = [r["data_wait"] for r in records if r["kind"] == "train" and r.get("epoch", 0) >= 1 and "data_wait" in r]
    return {"images_per_s": steady_images_per_s(records, args.batch), "map50": final["map50"], "map": final["map"],
            "predictions": str(predictions),
            "data_wait": sum(waits) / len(waits) if waits else None}  # is the loader what caps img/s?


def steady_images_per_s(records: list[dict], batch: int) -> float:
    """Training images per second over every logged window after epoch 0 (yolov5's figure leaves epoch 0 out too)."""
    train = [r for r in records if r["kind"] == "train"]
    steady = [r for r in train if r["epoch"] >= 1] or train
    images = [r.get("images") or batch for r in steady]
    seconds = sum(n / r["images_per_s"] for n, r in zip(images, steady))
    return sum(images) / max(seconds, 1e-9)


def _run_logged(cmd: list[str], log: Path, env: dict, cwd: Path = REPO) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        done = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n  log: {log}")


def cross_score(result: dict, args: argparse.Namespace, shards: Path, yolo: Path, job: Job) -> dict:
    predictions = Path(result["predictions"])
    spec = load_data_yaml(shards)
    result["pycocotools"] = pycocotools_score(predictions, spec)
    if args.yolov5_dir:
        result["yolov5_eval"] = yolov5_score(predictions, yolo, python=args.yolov5_python,
                                             yolov5_dir=args.yolov5_dir, out=job.dir / "yolov5_score.json")
    return result


def run_job(args: argparse.Namespace, model: str, trainer: str, seed: int, out: Path, shards: Path, yolo: Path,
            env: dict) -> None:
    """One training run and its scoring, unless its result is already in `out`."""
    name = f"yolotr-{args.tag}" if trainer == "yolotr" and args.tag else trainer
    job = Job(model, name, seed, out / "runs" / model / f"{name}-s{seed}")
    revalidate = args.revalidate_yolov5 and trainer == "yolov5" and job.result_file.is_file()
    if job.result_file.is_file() and not revalidate:
        return
    started = time.time()
    print(f"[parity] {model} {name} seed {seed} ...", flush=True)
    if trainer == "yolov5":
        result = run_yolov5(job, args, yolo, env, val_only=revalidate)
    else:
        result = run_yolotr(job, args, shards, args.overrides)
    result = cross_score(result, args, shards, yolo, job)
    if revalidate:  # the training's figures stay; only the validation was redone
        started -= json.loads(job.result_file.read_text())["wall_s"]
    result.update(asdict(job), dir=str(job.dir), wall_s=time.time() - started,
                  overrides=args.overrides if trainer == "yolotr" else args.yolov5_arg,
                  settings={"epochs": args.epochs, "batch": args.batch, "imgsz": args.imgsz})
    job.result_file.write_text(json.dumps(result, indent=1))
    wait = f", data wait {100 * result['data_wait']:.0f} %" if result.get("data_wait") is not None else ""
    print(f"[parity]   mAP50 {result['map50']:.3f} mAP50-95 {result['map']:.3f} "
          f"{result['images_per_s']:.1f} img/s{wait} ({result['wall_s']:.0f} s)", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--synth", help="TRAIN,VAL,IMGSZ,SEED: make the synthetic set (`yolotr data synth`)")
    source.add_argument("--data", help="a shard data.yaml (yolotr) or a YOLO-format data.yaml (sharded once)")
    parser.add_argument("--out", type=Path, required=True, help="results folder; finished runs in it are reused")
    parser.add_argument("--models", default="yolov5n", help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--workers", type=int, default=1, help="data loading workers (both trainers)")
    parser.add_argument("--recipe", type=Path, default=Path("configs/train/coco-yolov5.yaml"),
                        help="yolotr training config, relative to --yolotr-repo (default %(default)s)")
    parser.add_argument("--yolotr-repo", type=Path, default=REPO,
                        help="the yolotr checkout to train with (e.g. a worktree of an older commit, for an ablation)")
    parser.add_argument("--trainers", default="yolov5,yolotr", help="which to run: yolov5, yolotr or both")
    parser.add_argument("--tag", default="", help="name of a yolotr variant (with --set), e.g. an ablation row")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="yolotr config override for this variant (repeatable), e.g. train.cos_lr=false")
    parser.add_argument("--yolov5-arg", action="append", default=[], help="extra train.py argument (repeatable)")
    parser.add_argument("--yolov5-dir", type=Path, default=os.environ.get("YOLOV5_DIR"))
    parser.add_argument("--yolov5-python", default=os.environ.get("YOLOV5_PYTHON") or sys.executable)
    parser.add_argument("--report-only", action="store_true", help="print the table of the runs in --out")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="start no seed whose runs (timed by the previous seed) would end after this many seconds")
    parser.add_argument("--synth-workers", type=int, default=0, help="processes that render the synthetic set")
    parser.add_argument("--revalidate-yolov5", action="store_true",
                        help="validate finished yolov5 runs again (val.py at batch 1) and rescore them")
    args = parser.parse_args(argv)
    args.device_v5 = "0" if torch_device() == "cuda" else "cpu"
    args.yolotr_repo = args.yolotr_repo.resolve()
    args.recipe = (args.yolotr_repo / args.recipe).resolve()
    if not (args.synth or args.data or args.report_only):
        parser.error("one of --synth or --data is required")
    trainers = set(args.trainers.split(","))
    if "yolov5" in trainers and not args.yolov5_dir and not args.report_only:
        parser.error("yolov5 runs need YOLOV5_DIR (or --yolov5-dir): a checkout of ultralytics/yolov5")
    for model in args.models.split(","):
        if model not in MODELS:
            parser.error(f"--models: unknown {model!r} (known: {', '.join(MODELS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        deadline = time.time() + args.deadline_s if args.deadline_s else None
        shards, yolo = prepare_data(args, out)
        env = yolov5_env(args, out) if args.yolov5_dir else {}
        last_seed_s = 0.0  # what the last seed's runs took: the estimate for the next one
        for model in args.models.split(","):
            for seed in args.seeds:
                if deadline is not None and time.time() + last_seed_s > deadline:
                    print(f"[parity] {model} seed {seed} and later: skipped, they would end after the deadline",
                          flush=True)
                    break
                started = time.time()
                for trainer in args.trainers.split(","):
                    run_job(args, model, trainer, seed, out, shards, yolo, env)
                last_seed_s = time.time() - started
    table = format_report(load_runs(out))
    (out / "parity.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
