"""yolotr's one typed config tree: every knob of a training run, as dataclasses with a docstring per field.

Loaded and validated by `yolotr.config.load`; docs/config.md's reference is generated from these docstrings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from yolotr.config.augment import AugmentConfig
from yolotr.config.model import LossHyp, TransformerOverrides


@dataclass
class RunConfig:
    dir: str = "runs/exp"
    """Run folder: resolved config, metrics.jsonl, checkpoints, plots, W&B files. Relative to the working directory."""
    seed: int = 0
    """Seed of the model init, the data order and the augmentations."""
    lock_lease_s: float = 60.0
    """The run folder's lock (`RUN/.lock`) is kept fresh every lease/4 s; a holder on another host that has not
    touched it for this long is taken over (and fenced: its later commits fail). A holder on this host whose process
    is alive, even stopped, is never taken over."""


@dataclass
class TrainConfig:
    epochs: int = 100
    """Epochs to train (an epoch is one pass over the train shards at the global batch size)."""
    max_steps: int | None = None
    """Stop after this many optimizer steps, skipped steps included. None: epochs × steps per epoch."""
    batch_size: int = 64
    """Global batch size (all ranks together, per optimizer micro-step). Must divide by the number of ranks."""
    nominal_batch_size: int = 64
    """Gradients are accumulated until this many images before an optimizer step (YOLOv5's `nbs`)."""
    imgsz: int = 640
    """Square training image size in pixels (multiple of 32)."""
    num_workers: int = 2
    """DataLoader workers per rank."""
    prefetch: int | None = None
    """Batches each DataLoader worker builds ahead (torch's prefetch_factor). None: chosen for each epoch from the
    measured times, enough queued to cover a worker's slow batches at the trainer's pace, at least 2 (torch's
    default), at most 16 and 2 GiB of queued images per rank (data/prefetch.py); logged when it changes."""
    augment_on: Literal["cpu", "device"] = "cpu"
    """Where training images are decoded and augmented. cpu: in the DataLoader workers (libjpeg-turbo, OpenCV).
    device: the workers only read the samples and draw the augmentations; the training process decodes the batch in
    one call on its device (nvJPEG on a GPU) and renders mosaic, affine, flip and HSV there, with the same boxes and
    pixels equal up to interpolation rounding (data/device_batch.py). Not yet measured on a GPU against cpu, so not
    the default there; `benchmarks/loader_speed.py` compares the two."""
    max_data_error_fraction: float = 0.01
    """Corrupt samples (skipped, counted, logged with key and reason) beyond this fraction stop the run (exit 4)."""
    optimizer: Literal["sgd", "adamw"] = "sgd"
    """SGD with Nesterov momentum (YOLOv5's default) or AdamW."""
    lr0: float = 0.01
    """Initial learning rate of the CNN parameters (SGD 0.01, AdamW 0.001 in YOLOv5)."""
    lrf: float = 0.01
    """Final learning rate as a fraction of lr0 (the decay's target, reached after the last epoch)."""
    momentum: float = 0.937
    """SGD momentum / Adam beta1."""
    weight_decay: float = 0.0005
    """Weight decay of conv and linear weights (scaled by batch_size × accumulate / nbs as in YOLOv5). Never on norms or biases."""
    transformer_lr_mult: float = 0.2
    """Learning-rate multiplier of Transformer-block parameters (attention wants 1/5–1/10 of the CNN's LR)."""
    warmup_epochs: float = 3.0
    """Warmup length in epochs (at least `warmup_steps_min` batches, as YOLOv5). Meanwhile the batches accumulated per
    optimizer step ramp from 1 to nominal_batch_size / batch_size, as in YOLOv5 (not under DeepSpeed)."""
    warmup_steps_min: int = 100
    """Lower bound of the warmup length in batches of `batch_size` (YOLOv5's 100 iterations; with no accumulation a
    batch is an optimizer step)."""
    warmup_momentum: float = 0.8
    """Momentum at the start of the warmup."""
    warmup_bias_lr: float = 0.1
    """Bias learning rate at the start of the warmup (falls to the scheduled LR)."""
    cos_lr: bool = True
    """Cosine decay from lr0 to lr0·lrf; false: linear decay (YOLOv5's default)."""
    lr_step: Literal["epoch", "step"] = "epoch"
    """When the decay moves: once per epoch, as YOLOv5's LambdaLR (the last epoch trains at the LR of epochs − 1), or
    at every optimizer step."""
    autoanchor: bool = True
    """Before training, check the model's anchors against the train boxes and, when fewer than 98 % of them can be
    matched (loss.anchor_t), fit new ones (YOLOv5's AutoAnchor; yolotr/model/autoanchor.py). Saved with the weights."""
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    """Autocast dtype of the forward pass. The loss is always fp32 and master weights are always fp32. fp16 is for
    GPUs without bf16 (T4, V100): a loss scaler (torch.amp.GradScaler) whose overflow check is the guard's verdict, so
    a scaler skip and a NaN skip are one decision on every rank (yolotr/guard/loss_scale.py). Not under DeepSpeed."""
    compile: bool | Literal["auto"] = "auto"
    """torch.compile the detector's forward (in place: checkpoints keep plain parameter names). auto: on a GPU, off on
    a CPU. The first steps then wait for the compilation; its time is logged as a `compile` event."""
    compile_backend: str = "inductor"
    """torch.compile backend when `compile` is on: inductor (fast kernels; needs a C compiler on a CPU), or
    aot_eager / eager to check the compiled path quickly (tests)."""
    channels_last: bool | Literal["auto"] = "auto"
    """Keep the model's conv weights and the batches in channels-last memory format (faster convolutions on tensor
    cores). auto: on a GPU, off on a CPU."""
    ema: bool = True
    """Keep an exponential moving average of the weights (fp32), validated and exported."""
    ema_decay: float = 0.9999
    """EMA decay, ramped as decay·(1 − exp(−updates/ema_tau)) like YOLOv5."""
    ema_tau: float = 2000.0
    """EMA ramp constant in updates."""
    log_every: int = 10
    """Write a train record (and read device-side counters on GPU) every this many optimizer steps."""
    progress_bar: bool = True
    """Rank-0 progress bar on the console."""
    weights: str | None = None
    """Start from these weights (a yolotr weights file or checkpoint, or a yolov5 .pt): every tensor whose layer,
    name and shape match the model is loaded, the rest start fresh. Ignored when the run resumes."""
    freeze: int | list[int] = 0
    """Layers that keep their starting weights, as YOLOv5's --freeze: N freezes layers 0..N-1, a list those layers."""


@dataclass
class GuardConfig:
    enabled: bool = True
    """Skip non-finite steps and roll back on repeated trouble. Off only for the stability study's baselines."""
    max_norm: float = 1.0
    """Clip on the global norm of the gradient of the per-image mean loss, the same at any batch size, number of ranks
    or accumulation (docs/stability.md). YOLOv5's clip_grad_norm_(10) on its batch-summed loss at its nominal batch
    of 64 is 10 / 64 = 0.16 in these units. 0 disables clipping (not the skip)."""
    max_consecutive_skips: int = 3
    """After this many consecutive skipped steps the run rolls back to the last good snapshot."""
    spike_zscore: float = 6.0
    """A loss this many standard deviations above the recent window counts as a spike and rolls back. 0 disables."""
    spike_window: int = 100
    """Number of recent finite losses the spike z-score is computed over."""
    spike_min_history: int = 20
    """No spike detection before this many finite losses were seen in the window."""
    snapshot_every: int = 50
    """Take a host-memory snapshot of the training state every this many steps (only when the steps since were good)."""
    lr_backoff: float = 0.5
    """After a rollback the learning rate is multiplied by this factor for `cooldown_steps`."""
    cooldown_steps: int = 100
    """Length of the LR back-off after a rollback, in optimizer steps."""
    max_rollbacks: int = 3
    """At most this many rollbacks within `rollback_window` steps; trouble after them stops the run (exit code 3)."""
    rollback_window: int = 1000
    """Window, in steps, over which rollbacks are counted."""
    quarantine_after: int = 2
    """A sample key implicated in this many bad steps is quarantined: the stream skips it from then on."""
    max_quarantine_fraction: float = 0.01
    """At most this fraction of the train samples is ever quarantined; beyond it the cause is not the data."""
    check_every: int | None = None
    """Read the guard's device-side verdicts on the host every this many steps. None: 1 on CPU, log_every on GPU
    (and with debug.cuda_sync_check)."""


@dataclass
class CheckpointConfig:
    every: int = 500
    """Save a checkpoint every this many optimizer steps (and at the end, on preemption and after validation)."""
    keep_last: int = 3
    """How many of the newest checkpoints to keep (the best by fitness is kept in addition)."""
    async_save: bool = True
    """Copy state to host memory at the step boundary and write it in the background."""
    writer: Literal["process", "thread"] = "process"
    """Who serialises the files: a writer process per rank (the GIL-bound serialisation stays out of the training
    loop; needs shared memory, e.g. `docker run --shm-size`), or the background thread of the trainer itself."""
    resume: str = "none"
    """none: a new run, in run.dir or the next free run.dir2, run.dir3, ... (a Slurm requeue or an elastic restart of
    the same job continues its own run); auto: continue the newest run of run.dir from its newest valid checkpoint;
    or the path of a run folder or checkpoint to continue."""
    preempt_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])
    """Signals that request checkpoint-and-exit (exit code 75), agreed across ranks at the next step."""


@dataclass
class ValConfig:
    every_epochs: int = 1
    """Validate the EMA weights every this many epochs (and at the end). 0: only at the end."""
    batch_size: int = 32
    """Validation batch size per rank."""
    conf_thres: float = 0.001
    """Confidence threshold for mAP (YOLOv5's val uses 0.001)."""
    iou_thres: float = 0.6
    """NMS IoU threshold for mAP."""
    max_det: int = 300
    """Detections kept per image."""


@dataclass
class WandbConfig:
    enabled: bool | Literal["auto"] = "auto"
    """Log to Weights & Biases from rank 0. auto: only when W&B is set up, i.e. `WANDB_API_KEY` is set, `wandb login`
    left a netrc entry, or `WANDB_MODE` is set (offline, online; disabled respected); true: also without, as an
    offline run. One line says where the run went; W&B's own console output is silenced."""
    project: str = "yolotr"
    """W&B project name."""
    name: str | None = None
    """W&B run name (default: the run folder's name)."""


@dataclass
class LogConfig:
    tensorboard: bool = True
    """Rank 0 writes TensorBoard event files to run.dir/tensorboard (train and val records, W&B's keys). Needs the
    tensorboard package (`pip install 'yolotr[tensorboard]'`); without it the run says so once and goes on."""
    results_csv: bool = True
    """Rank 0 writes run.dir/results.csv: a row per validation (epoch, train losses, P, R, mAP@0.5, mAP@0.5:0.95,
    fitness, learning rates), remade from metrics.jsonl at every start."""


@dataclass
class DistributedConfig:
    backend: Literal["auto", "ddp", "deepspeed"] = "auto"
    """auto: DeepSpeed when launched with `accelerate launch --use_deepspeed`, else DDP (or one process)."""
    deepspeed_config: str | None = None
    """DeepSpeed json (configs/deepspeed/zero2.json …) when backend is deepspeed and accelerate did not supply one."""
    timeout_s: int = 600
    """Process-group timeout in seconds."""


@dataclass
class FaultsConfig:
    nan_loss_at: list[list[int]] = field(default_factory=list)
    """[[rank, step], ...]: that rank's loss becomes NaN at that step (fault drills and tests)."""
    nan_grad_at: list[list[int]] = field(default_factory=list)
    """[[rank, step], ...]: that rank's local gradient gets a NaN at that step, before the all-reduce."""
    nan_forward_at: list[list[int]] = field(default_factory=list)
    """[[rank, step], ...]: the first Transformer block's output becomes NaN on that rank at that step."""
    random_nan_rate: float = 0.0
    """Probability per (step, rank) of a NaN loss, drawn from `random_seed` (the stability study's injection)."""
    random_seed: int = 1234
    """Seed of the random NaN injection, independent of the run seed."""
    skip_steps: list[int] = field(default_factory=list)
    """Steps to skip as if they were non-finite, without any NaN (the reference run of the skip tests)."""
    exit_at_step: int | None = None
    """Exit abruptly (os._exit(1), like a crash) after this step: crash-resume drills."""
    preempt_at_step: int | None = None
    """Act as if a preemption notice arrived during this step: checkpoint after it and exit 75 (drills)."""
    pause_checkpoint_write_s: float = 0.0
    """Sleep this long inside the checkpoint writer before committing (to test a kill during a save)."""
    pause_checkpoint_write_from_step: int = 0
    """`pause_checkpoint_write_s` applies to the saves of this step and later only (0: every save), so that a drill can
    pause one save without slowing the saves before it."""
    fill_disk_after_step: int | None = None
    """Fill the run folder's file system with a file of zeros (RUN/disk-filler) once this step and its checkpoint are
    done; after the last step, once the final validation and checkpoint are: full-disk drills."""
    fill_disk_leave_bytes: int = 0
    """Bytes `fill_disk_after_step` leaves free: room for small records, none for a weights file."""


@dataclass
class DebugConfig:
    sample_ledger: bool = False
    """Every rank appends the sample keys it trained on to ledger.jsonl (epoch, step, rank, key)."""
    rank_digests: bool = False
    """Every rank appends sha256 digests of its parameters, buffers and optimizer state to digests.jsonl."""
    anomaly_hooks: bool = False
    """On a bad step, name the first module whose output was non-finite (forward hooks; costs a sync per module)."""
    cuda_sync_check: bool = False
    """Every step outside inspection steps must not make the host wait for the device: on a GPU it runs under
    torch.cuda.set_sync_debug_mode("error"), on a CPU under a dispatch mode that raises on the same ops."""
    count_collectives: bool = False
    """Count the collectives issued per step with the profiler and log them as events (tests)."""


@dataclass
class Config:
    model: str = "yolotr-n.yaml"
    """Model yaml in YOLOv5's format, a shipped preset name (yolotr-s, yolov5s.yaml, ...), or a weights file (its
    architecture, and its weights unless train.weights names others)."""
    data: str = "datasets/synth/data.yaml"
    """Shard data yaml (`yolotr data synth` / `yolotr data shard`), a YOLO-format data.yaml, or a COCO json or folder
    (these two are converted into shards on first use, into data_cache)."""
    data_cache: str | None = None
    """Where shards made from a YOLO data.yaml or a COCO json are kept. None: `.yolotr/` beside the dataset
    (~/.cache/yolotr when that folder is read-only)."""
    run: RunConfig = field(default_factory=RunConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossHyp = field(default_factory=LossHyp)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    val: ValConfig = field(default_factory=ValConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    log: LogConfig = field(default_factory=LogConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    transformer: TransformerOverrides = field(default_factory=TransformerOverrides)
