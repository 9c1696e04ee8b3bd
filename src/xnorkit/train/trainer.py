"""The training loop: data, model, optimizer, logging, checkpoints, exact resume, DDP.

:func:`fit` runs one training run described by a :class:`RunConfig` and returns its final
metrics. A run lives in a directory named from its config (``<log_dir>/<name>-<N>``)
holding ``config.json``, TensorBoard events, ``checkpoint.pt`` (everything needed to
continue: weights, optimizer state, RNG states, position in the epoch), ``model.pt``
(weights and config, for ``xnorkit evaluate`` and the converter) and ``metrics.json``.

Resume is exact to the step: batch order and augmentation are pure functions of
(seed, epoch, step), and the checkpoint restores the RNG state that dropout draws from,
so N steps in one go and N/2 + resume + N/2 give bit-identical weights.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from xnorkit.data import (
    BatchLoader,
    get_dataset_info,
    get_preprocess,
    load_dataset,
    split_validation,
)
from xnorkit.data.transforms import Preprocess
from xnorkit.train.checkpoint import (
    CHECKPOINT,
    CONFIG,
    FINAL_MODEL,
    METRICS,
    atomic_save,
    atomic_write_json,
    latest_run_dir,
    load_checkpoint,
    new_run_dir,
    run_name,
)
from xnorkit.train.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    init_distributed,
)
from xnorkit.train.hparams import HParams
from xnorkit.train.losses import get_loss
from xnorkit.train.memory import applied, keep_freed_memory, tuning_enabled
from xnorkit.train.monitor import TensorBoardLogger, capture_activations
from xnorkit.train.setup import (
    apply_weight_constraints,
    build_model,
    build_optimizer,
    model_kwargs_for_dataset,
    scheduled_values,
)

__all__ = ["RunConfig", "fit", "evaluate_model", "hardware_info", "CHECKPOINT_VERSION"]

CHECKPOINT_VERSION = 1
ModelFactory = Callable[[], nn.Module]


@dataclass
class RunConfig:
    """Everything that defines one invocation of the trainer.

    Attributes:
        model: registered model name (``xnorkit.models``).
        dataset: registered dataset name (``xnorkit.data``).
        hparams: the hyperparameters (a named set plus overrides).
        hparams_set: the set's name (for the run name and the record).
        overrides: the ``--hparams`` overrides as given (for the run name).
        seed: seeds model init, batch order, augmentation and dropout.
        device: ``cpu``, ``cuda`` or ``cuda:K``.
        data_dir: dataset root (default ``$XNORKIT_DATA``).
        log_dir: parent folder of run directories.
        run_dir: use exactly this run directory instead of a derived name.
        resume: continue the latest run with the same name (or ``run_dir``) from its
            checkpoint; starts fresh when there is none.
        max_steps: stop after this many optimizer steps in total (across resumes).
        time_limit: stop cleanly (checkpoint, exit) after this many seconds of this invocation.
        eval_every: also evaluate every this many steps (None: at each epoch end only).
        log_every: scalar logging period in steps.
        histogram_every: histogram period in epochs (0: never).
        checkpoint_every: seconds between mid-epoch checkpoints (0: only at epoch ends/stop).
        train_subset, test_subset: use only this many (class-balanced) samples.
        progress: show progress bars.
        tensorboard: write TensorBoard events.
        threads: ``torch.set_num_threads`` value (None: torch's default).
        download: download missing dataset files.
        xnor: compute the forward pass of binary layers with the packed-bit GPU kernels
            (seed 000's ``--xnor``; :func:`xnorkit.kernels.gpu.use_binary_kernels`). Needs a
            CUDA device and Triton; the results equal the float simulation.
    """

    model: str
    dataset: str
    hparams: HParams
    hparams_set: str = "default"
    overrides: dict = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    data_dir: str | None = None
    log_dir: str = "runs"
    run_dir: str | None = None
    resume: bool = False
    max_steps: int | None = None
    time_limit: float | None = None
    eval_every: int | None = None
    log_every: int = 50
    histogram_every: int = 1
    checkpoint_every: float = 600.0
    train_subset: int | None = None
    test_subset: int | None = None
    progress: bool = True
    tensorboard: bool = True
    threads: int | None = None
    download: bool = True
    xnor: bool = False

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hparams"] = self.hparams.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        d = dict(d)
        d["hparams"] = HParams.from_dict(d["hparams"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def name(self) -> str:
        return run_name(self.model, self.dataset, self.hparams_set, self.overrides)


# Options that may differ between an interrupted run and its resumption.
_RUN_OPTIONS = {"resume", "max_steps", "time_limit", "progress", "device", "threads", "run_dir",
                "log_dir", "data_dir", "checkpoint_every", "log_every", "histogram_every",
                "eval_every", "tensorboard", "download", "overrides"}


def hardware_info(device: torch.device) -> dict:
    """CPU model, core count, torch threads and GPU name, for the run record."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": str(device), "python": platform.python_version()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["malloc_tuning"] = applied()
    return info


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: BatchLoader, loss_name: str,
                   dist_info: DistInfo = DistInfo()) -> dict[str, float]:
    """Loss and accuracy of ``model`` over every batch of ``loader`` (summed over ranks)."""
    loss_fn = get_loss(loss_name)
    was_training = model.training
    model.eval()
    dev = loader.device
    total = torch.zeros(3, dtype=torch.float64, device=dev)  # loss sum, correct, count
    for x, y in loader.epoch(0):
        if len(y) == 0:
            continue
        out = model(x)
        total[0] += loss_fn(out, y).double() * len(y)
        total[1] += (out.argmax(1) == y).sum()
        total[2] += len(y)
    model.train(was_training)
    all_reduce_sum(total, dist_info)
    n = max(total[2].item(), 1.0)
    return {"loss": total[0].item() / n, "accuracy": total[1].item() / n, "count": int(total[2].item())}


class _StopFlag:
    """Set by SIGTERM/SIGINT so the loop can checkpoint at a step boundary and exit."""

    def __init__(self) -> None:
        self.flag = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.flag:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.flag = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class _Trainer:
    def __init__(self, cfg: RunConfig, model_factory: ModelFactory | None) -> None:
        if model_factory is None:
            # Record the dataset's input shape and class count in the model arguments, so the
            # saved config rebuilds exactly this network (xnorkit evaluate, the converter).
            info = get_dataset_info(cfg.dataset)
            kw = model_kwargs_for_dataset(cfg.model, cfg.hparams.model, info.input_shape,
                                          info.num_classes)
            cfg = dataclasses.replace(cfg, hparams=dataclasses.replace(cfg.hparams, model=kw))
        self.cfg = cfg
        self.hp = cfg.hparams
        self.t_start = time.time()
        self.cpu_start = time.process_time()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.dist = init_distributed(cfg.device)
        self.device = self._device()
        if self.device.type == "cpu" and tuning_enabled():
            keep_freed_memory()  # no page faults for each step's re-allocated tensors (see train/memory.py)
        self.main = self.dist.is_main
        self._setup_run_dir()
        self._setup_data()
        torch.manual_seed(cfg.seed)
        if model_factory is not None:
            model = model_factory()
        else:
            model = build_model(cfg.model, self.hp.model)
        model.to(self.device)
        if self.hp.channels_last:
            model.to(memory_format=torch.channels_last)
        apply_weight_constraints(model)
        if self.dist.enabled and self.hp.sync_batchnorm:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.raw_model = model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model: nn.Module = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        else:
            self.model = model
        self.optimizer = build_optimizer(self.raw_model, self.hp, len(self.train_loader))
        self.loss_fn = get_loss(self.hp.loss)
        from xnorkit.metrics import FlipRatio

        self.flips = FlipRatio(self.raw_model)
        # Dropout and other in-training randomness: distinct per rank, reproducible.
        torch.manual_seed(cfg.seed * 1_000_003 + 7919 * self.dist.rank + 1)
        self.epoch = 0
        self.step_in_epoch = 0
        self.epoch_acc = torch.zeros(3, dtype=torch.float64, device=self.device)
        self.global_step = 0
        self.elapsed_before = 0.0
        self.cpu_before = 0.0
        self.history: list[dict] = []
        self.best: dict | None = None
        if self.resume_path is not None:
            self._load(self.resume_path)
        self.tb = TensorBoardLogger(self.run_dir if (self.main and cfg.tensorboard) else None,
                                    purge_step=self.global_step if self.resume_path else None)

    # ------------------------------------------------------------------ setup
    def _device(self) -> torch.device:
        dev = self.cfg.device
        if dev.startswith("cuda"):
            if not torch.cuda.is_available():
                raise RuntimeError(f"--device {dev}: CUDA is not available in this torch build "
                                   f"({torch.__version__}) or on this machine")
            if self.dist.enabled:
                return torch.device("cuda", self.dist.local_rank)
            return torch.device(dev)
        if dev != "cpu":
            raise ValueError(f"--device: expected cpu, cuda or cuda:K, got {dev!r}")
        return torch.device("cpu")

    def _setup_run_dir(self) -> None:
        cfg = self.cfg
        resume_path = None
        if self.main:
            if cfg.run_dir is not None:
                run_dir = Path(cfg.run_dir)
                run_dir.mkdir(parents=True, exist_ok=True)
            else:
                run_dir = latest_run_dir(cfg.log_dir, cfg.name()) if cfg.resume else None
                if run_dir is None or not (run_dir / CHECKPOINT).is_file():
                    run_dir = new_run_dir(cfg.log_dir, cfg.name())
            if cfg.resume and (run_dir / CHECKPOINT).is_file():
                resume_path = str(run_dir / CHECKPOINT)
            run_dir_s = str(run_dir)
        else:
            run_dir_s = None
        run_dir_s, resume_path = broadcast_object((run_dir_s, resume_path), self.dist)
        self.run_dir = Path(run_dir_s)
        self.resume_path = resume_path
        if self.main and resume_path is None:
            atomic_write_json(self.record(), self.run_dir / CONFIG)

    def _setup_data(self) -> None:
        cfg, hp = self.cfg, self.hp
        train = load_dataset(cfg.dataset, "train", cfg.data_dir, download=cfg.download)
        test = load_dataset(cfg.dataset, "test", cfg.data_dir, download=cfg.download)
        val = None
        if hp.validation_size:
            train, val = split_validation(train, hp.validation_size)
        if cfg.train_subset:
            train = train.subset(cfg.train_subset)
        if cfg.test_subset:
            test = test.subset(cfg.test_subset)
            if val is not None:
                val = val.subset(cfg.test_subset)
        self.num_train = len(train)
        pre: Preprocess = get_preprocess(train.name, hp.preprocess)
        common = dict(seed=cfg.seed, rank=self.dist.rank, world_size=self.dist.world_size,
                      device=self.device)
        self.train_loader = BatchLoader(train, hp.batch_size, pre.train, shuffle=True,
                                        drop_last=True, **common)
        ebs = hp.eval_batch_size - hp.eval_batch_size % self.dist.world_size or self.dist.world_size
        self.test_loader = BatchLoader(test, ebs, pre.eval, shuffle=False, drop_last=False, **common)
        self.val_loader = (BatchLoader(val, ebs, pre.eval, shuffle=False, drop_last=False, **common)
                           if val is not None else None)
        # A fixed batch for activation histograms.
        self.probe = pre.eval(test.images[: min(256, len(test))].to(self.device), None)

    def record(self) -> dict:
        """The run's config as saved in ``config.json`` and in checkpoints."""
        return {"format": "xnorkit-run", "version": CHECKPOINT_VERSION, "run_name": self.cfg.name(),
                "run_dir": str(self.run_dir), "config": self.cfg.to_dict(),
                "world_size": self.dist.world_size}

    # -------------------------------------------------------------- checkpoints
    def _rank_states(self) -> list[dict]:
        """Per-rank state, gathered from all ranks: RNG (dropout draws from it) and the
        running sums of the epoch's training loss and accuracy."""
        rng = {"torch": torch.get_rng_state(), "epoch_acc": self.epoch_acc.cpu()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        if not self.dist.enabled:
            return [rng]
        import torch.distributed as dist

        states: list = [None] * self.dist.world_size
        dist.all_gather_object(states, rng)
        return states

    def _state(self, ranks: list[dict]) -> dict:
        return {
            "format": "xnorkit-checkpoint", "version": CHECKPOINT_VERSION,
            "config": self.cfg.to_dict(), "model_name": self.cfg.model,
            "model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step, "elapsed": self._elapsed(),
            "cpu_time": self._cpu_time(),
            "history": self.history, "best": self.best, "ranks": ranks,
            "world_size": self.dist.world_size,
        }

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.time() - self.t_start)

    def _cpu_time(self) -> float:
        """CPU seconds used by this process (all threads), summed over resumed invocations."""
        return self.cpu_before + (time.process_time() - self.cpu_start)

    def save_checkpoint(self) -> None:
        # Every rank holds identical weights; rank 0 writes them with every rank's RNG state.
        ranks = self._rank_states()
        if self.main:
            atomic_save(self._state(ranks), self.run_dir / CHECKPOINT)
        barrier(self.dist)

    def _load(self, path: str) -> None:
        ckpt = load_checkpoint(path, map_location=self.device)
        saved = RunConfig.from_dict(ckpt["config"])
        diff = [k for k in ("model", "dataset", "seed", "train_subset", "test_subset")
                if getattr(saved, k) != getattr(self.cfg, k)]
        if saved.hparams.to_dict() != self.hp.to_dict():
            a, b = saved.hparams.to_dict(), self.hp.to_dict()
            diff += [f"hparams.{k}" for k in a if a[k] != b.get(k)]
        if diff:
            raise ValueError(f"{path}: cannot resume: the checkpoint was made with different "
                             f"settings for {', '.join(diff)}; start a new run instead")
        if ckpt.get("world_size", 1) != self.dist.world_size:
            raise ValueError(f"{path}: saved with {ckpt.get('world_size')} processes, resumed "
                             f"with {self.dist.world_size}; the batch split would change")
        self.raw_model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.epoch = ckpt["epoch"]
        self.step_in_epoch = ckpt["step_in_epoch"]
        self.global_step = ckpt["global_step"]
        self.elapsed_before = ckpt["elapsed"]
        self.cpu_before = ckpt.get("cpu_time", 0.0)
        self.history = ckpt["history"]
        self.best = ckpt["best"]
        rng = ckpt["ranks"][self.dist.rank]
        self.epoch_acc = rng["epoch_acc"].to(self.device)
        torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"].cpu(), self.device)

    def save_final(self, metrics: dict) -> None:
        if not self.main:
            return
        atomic_save({"format": "xnorkit-model", "version": CHECKPOINT_VERSION,
                     "config": self.cfg.to_dict(), "model_name": self.cfg.model,
                     "model": self.raw_model.state_dict(), "metrics": metrics},
                    self.run_dir / FINAL_MODEL)
        atomic_write_json(metrics, self.run_dir / METRICS)

    # --------------------------------------------------------------------- loop
    def _should_stop(self, stop: _StopFlag, deadline: float | None) -> bool:
        local = stop.flag or (deadline is not None and time.time() >= deadline)
        if self.dist.enabled:
            t = torch.tensor([1.0 if local else 0.0], device=self.device)
            all_reduce_sum(t, self.dist)
            return bool(t.item() > 0)
        return local

    def _log_histograms(self) -> None:
        if self.tb.writer is None:
            return
        self.tb.weight_histograms(self.raw_model, self.global_step)
        was = self.raw_model.training
        self.raw_model.eval()
        with torch.no_grad(), capture_activations(self.raw_model) as acts:
            self.raw_model(self.probe)
        self.raw_model.train(was)
        self.tb.activation_histograms(acts, self.global_step)

    def _evaluate(self, tag: str) -> dict:
        res = {"test": evaluate_model(self.raw_model, self.test_loader, self.hp.loss, self.dist)}
        if self.val_loader is not None:
            res["validation"] = evaluate_model(self.raw_model, self.val_loader, self.hp.loss,
                                               self.dist)
        self.tb.scalars({f"{split}/loss": r["loss"] for split, r in res.items()}
                        | {f"{split}/accuracy": r["accuracy"] for split, r in res.items()},
                        self.global_step)
        return res

    def run(self) -> dict:
        from tqdm.auto import tqdm

        cfg, hp = self.cfg, self.hp
        deadline = self.t_start + cfg.time_limit if cfg.time_limit else None
        load_start = _loadavg()
        loads: list[float] = []
        steps_per_epoch = len(self.train_loader)
        if steps_per_epoch == 0:
            raise ValueError(f"{cfg.dataset}: {self.num_train} training samples give no batch "
                             f"of size {hp.batch_size}")
        self.model.train()
        stopped = None
        last_ckpt = time.time()
        with _StopFlag() as stop:
            if self.global_step == 0 and cfg.histogram_every:
                self._log_histograms()
            while self.epoch < hp.epochs and stopped is None:
                epoch_t0 = time.time()
                acc = self.epoch_acc  # loss sum, correct, count of this epoch so far
                bar = tqdm(total=steps_per_epoch, initial=self.step_in_epoch, leave=False,
                           desc=f"epoch {self.epoch + 1}/{hp.epochs}", dynamic_ncols=True,
                           disable=not (cfg.progress and self.main), unit="step")
                for x, y in self.train_loader.epoch(self.epoch, self.step_in_epoch):
                    log_now = (self.global_step + 1) % cfg.log_every == 0
                    if log_now:
                        vals = scheduled_values(hp, self.global_step, steps_per_epoch)
                        self.flips.reset()
                    if self.hp.channels_last and x.dim() == 4:
                        x = x.contiguous(memory_format=torch.channels_last)
                    out = self.model(x)
                    loss = self.loss_fn(out, y)
                    total_loss = loss
                    if hp.l1:
                        total_loss = loss + hp.l1 * sum(p.abs().sum() for p in self.raw_model.parameters()
                                                        if p.requires_grad)
                    self.optimizer.zero_grad(set_to_none=True)
                    total_loss.backward()
                    self.optimizer.step()
                    apply_weight_constraints(self.raw_model)
                    self.global_step += 1
                    self.step_in_epoch += 1
                    with torch.no_grad():
                        acc[0] += loss.detach().double() * len(y)
                        acc[1] += (out.detach().argmax(1) == y).sum()
                        acc[2] += len(y)
                    bar.update(1)
                    if log_now:
                        n = max(acc[2].item(), 1.0)
                        flip = self.flips.update().total if self.flips.numel else None
                        scal = {"train/loss": loss.item(), "train/accuracy_running": acc[1].item() / n,
                                "train/flip_ratio": flip}
                        scal |= {f"hparams/{k}": v for k, v in vals.items()}
                        self.tb.scalars(scal, self.global_step)
                        bar.set_postfix(loss=f"{acc[0].item() / n:.4f}", acc=f"{acc[1].item() / n:.4f}")
                    if cfg.eval_every and self.global_step % cfg.eval_every == 0:
                        res = self._evaluate("step")
                        bar.write(f"step {self.global_step}: test accuracy {res['test']['accuracy']:.4f}")
                    if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                        stopped = "max_steps"
                    elif self._should_stop(stop, deadline):
                        stopped = "signal" if stop.flag else "time_limit"
                    if stopped is not None:
                        break
                    if cfg.checkpoint_every and time.time() - last_ckpt >= cfg.checkpoint_every \
                            and self.step_in_epoch < steps_per_epoch:
                        self.save_checkpoint()
                        last_ckpt = time.time()
                bar.close()
                if self.step_in_epoch < steps_per_epoch:
                    break  # stopped mid-epoch: checkpoint below, no epoch-end evaluation
                # ---- end of epoch
                all_reduce_sum(acc, self.dist)
                n = max(acc[2].item(), 1.0)
                vals = scheduled_values(hp, max(self.global_step - 1, 0), steps_per_epoch)
                res = self._evaluate("epoch")
                load = _loadavg()
                if load is not None:
                    loads.append(load)
                entry = {"epoch": self.epoch + 1, "step": self.global_step,
                         "train_loss": acc[0].item() / n, "train_accuracy": acc[1].item() / n,
                         "test_loss": res["test"]["loss"], "test_accuracy": res["test"]["accuracy"],
                         "epoch_time_s": time.time() - epoch_t0, "elapsed_s": self._elapsed(),
                         "cpu_time_s": self._cpu_time(),
                         "load_avg_1min": load} | {k: v for k, v in vals.items()}
                if "validation" in res:
                    entry["validation_loss"] = res["validation"]["loss"]
                    entry["validation_accuracy"] = res["validation"]["accuracy"]
                self.history.append(entry)
                key = "validation_accuracy" if "validation" in res else "test_accuracy"
                if self.best is None or entry[key] > self.best[key]:
                    self.best = dict(entry)
                self.tb.scalars({"train/loss_epoch": entry["train_loss"],
                                 "train/accuracy": entry["train_accuracy"],
                                 "time/epoch_s": entry["epoch_time_s"]}, self.global_step)
                if self.main:
                    msg = (f"epoch {self.epoch + 1}/{hp.epochs}  train loss {entry['train_loss']:.4f} "
                           f"acc {entry['train_accuracy']:.4f}  test loss {entry['test_loss']:.4f} "
                           f"acc {entry['test_accuracy']:.4f}")
                    if "validation_accuracy" in entry:
                        msg += f"  val acc {entry['validation_accuracy']:.4f}"
                    msg += f"  lr {vals.get('learning_rate', 0):.3g}  {entry['epoch_time_s']:.1f}s"
                    if cfg.progress:
                        tqdm.write(msg)
                    else:
                        print(msg, flush=True)
                self.epoch += 1
                self.step_in_epoch = 0
                self.epoch_acc = torch.zeros(3, dtype=torch.float64, device=self.device)
                if cfg.histogram_every and self.epoch % cfg.histogram_every == 0:
                    self._log_histograms()
                self.tb.flush()
                if self.epoch < hp.epochs:
                    self.save_checkpoint()
                    last_ckpt = time.time()
                if stopped is None and self._should_stop(stop, deadline):
                    stopped = "signal" if stop.flag else "time_limit"
        finished = self.epoch >= hp.epochs
        self.save_checkpoint()
        metrics = self._final_metrics(finished, stopped, load_start, loads)
        self.save_final(metrics)
        self.tb.close()
        return metrics

    def _final_metrics(self, finished: bool, stopped: str | None, load_start, loads) -> dict:
        last = self.history[-1] if self.history else {}
        elapsed = self._elapsed()
        return {
            "model": self.cfg.model, "dataset": self.cfg.dataset,
            "hparams_set": self.cfg.hparams_set, "overrides": self.cfg.overrides,
            "seed": self.cfg.seed, "run_dir": str(self.run_dir),
            "finished": finished, "stopped_by": None if finished else stopped,
            "epochs_completed": self.epoch, "epochs": self.hp.epochs,
            "global_step": self.global_step,
            "test_accuracy": last.get("test_accuracy"), "test_loss": last.get("test_loss"),
            "validation_accuracy": last.get("validation_accuracy"),
            "train_accuracy": last.get("train_accuracy"), "train_loss": last.get("train_loss"),
            "best": self.best, "wall_time_s": elapsed, "cpu_time_s": self._cpu_time(),
            "examples_per_s": (self.global_step * self.hp.batch_size / elapsed) if elapsed else None,
            "load_avg_1min": {"start": load_start, "end": _loadavg(),
                              "mean_at_epoch_ends": (sum(loads) / len(loads)) if loads else None},
            "hardware": hardware_info(self.device), "world_size": self.dist.world_size,
            "hparams": self.hp.to_dict(), "history": self.history,
        }


def fit(cfg: RunConfig, model_factory: ModelFactory | None = None) -> dict:
    """Train as described by ``cfg``; returns the final metrics (also in ``metrics.json``).

    Args:
        cfg: the run configuration.
        model_factory: build the model with this instead of ``get_model(cfg.model, ...)``
            (library use with custom models; the name is then only a label).
    """
    if not cfg.xnor:
        return _Trainer(cfg, model_factory).run()
    from xnorkit.kernels.gpu import unavailable_reason, use_binary_kernels

    if not str(cfg.device).startswith("cuda"):
        raise ValueError(f"xnor (--xnor) needs a CUDA device: the packed-bit kernels run on NVIDIA GPUs "
                         f"(device is {cfg.device!r}; use --device cuda)")
    reason = unavailable_reason()
    if reason is not None:
        raise ValueError(f"xnor (--xnor): the binary GPU kernels cannot run here: {reason}")
    with use_binary_kernels(True):
        return _Trainer(cfg, model_factory).run()
