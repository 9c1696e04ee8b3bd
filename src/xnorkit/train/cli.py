"""``xnorkit train`` and ``xnorkit evaluate``.

Registered in the ``xnorkit`` command group by :mod:`xnorkit.cli`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import click

__all__ = ["train", "evaluate", "parse_duration"]

_EPILOG = """\b
Examples:
  xnorkit train binarynet_mlp --dataset mnist --hparams-set ours
  xnorkit train binarynet_batch --dataset cifar10 --hparams-set bop2ndOrder_CIFAR \\
      --device cuda --resume --time-limit 9m
  xnorkit train binarynet_mlp --dataset mnist --hparams "epochs=5,learning_rate=1e-3"
  xnorkit train binarynet_mlp --dataset mnist --binary --batch_norm --n_hidden 1024 --lr 1e-3
  xnorkit train binarynet_mlp --dataset mnist --device cuda --xnor   (packed-bit GPU forward)
  torchrun --nproc_per_node 2 -m xnorkit.cli train ...      (data-parallel)
  xnorkit evaluate runs/binarynet_mlp-mnist-ours-1
"""


def parse_duration(text: str | None) -> float | None:
    """Seconds in ``"540"``, ``"540s"``, ``"9m"``, ``"1h30m"``, ``"2h"`` (None stays None).

    Raises:
        click.BadParameter: anything else.
    """
    if text is None:
        return None
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return float(t)
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", t)
    if not t or not m or not any(m.groups()):
        raise click.BadParameter(f"expected a duration like 540, 540s, 9m or 1h30m, got {text!r}")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s


def _print_config(cfg, run_name: str) -> None:
    from rich.console import Console
    from rich.table import Table

    hp = cfg.hparams.to_dict()
    table = Table(title=f"xnorkit train: {run_name}", show_header=True, header_style="bold")
    table.add_column("setting")
    table.add_column("value")
    for k in ("model", "dataset", "hparams_set", "seed", "device", "data_dir", "max_steps",
              "time_limit"):
        v = getattr(cfg, k)
        if v is not None:
            table.add_row(k, str(v))
    for k, v in hp.items():
        if k == "model":
            for mk, mv in v.items():
                table.add_row(f"model.{mk}", str(mv))
        elif not (k.endswith(("_end", "_decay")) and v is None):
            table.add_row(k, str(v))
    Console(stderr=True).print(table)


@click.command(epilog=_EPILOG, context_settings={"help_option_names": ["-h", "--help"],
                                                  "max_content_width": 100})
@click.argument("model")
@click.option("--dataset", "-d", help="mnist, fashion_mnist or cifar10.")
@click.option("--hparams-set", "-s", "hparams_set", default="default", show_default=True,
              help="Named hyperparameter set registered for MODEL (see --list-hparams).")
@click.option("--hparams", "hparams", multiple=True, metavar="K=V,...",
              help="Override hyperparameters or model arguments, e.g. 'epochs=5,model.hidden_units=1024'.")
@click.option("--epochs", type=click.IntRange(0), help="Override hparams.epochs.")
@click.option("--batch-size", "--batch_size", "batch_size", type=click.IntRange(1),
              help="Override hparams.batch_size (global, over all processes).")
@click.option("--lr", "lr", type=float, help="Override hparams.learning_rate (seed 000 flag).")
@click.option("--reg", "reg", type=float,
              help="L1 penalty on all trainable parameters (seed 000 flag; sets hparams.l1).")
@click.option("--binary/--no-binary", "binary", default=None,
              help="Seed 000 flag: binary (default) or full-precision MLP (model.binary).")
@click.option("--batch_norm/--no-batch_norm", "--batch-norm/--no-batch-norm", "batch_norm",
              default=None, help="Seed 000 flag: BatchNorm after each hidden layer (model.batch_norm).")
@click.option("--n_hidden", "--n-hidden", "n_hidden", type=click.IntRange(1),
              help="Seed 000 flag: hidden units per layer of the MLP (model.hidden_units).")
@click.option("--log-dir", "--log_dir", "log_dir", default="runs", show_default=True,
              type=click.Path(file_okay=False), help="Parent folder of run directories.")
@click.option("--run-dir", type=click.Path(file_okay=False),
              help="Use exactly this run directory instead of <log-dir>/<name>-<N>.")
@click.option("--resume", is_flag=True,
              help="Continue the latest run with the same config (or --run-dir) from its checkpoint.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:K.")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="XNORKIT_DATA",
              help="Dataset root [env XNORKIT_DATA].")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--max-steps", "--max_steps", "max_steps", type=click.IntRange(1),
              help="Stop after this many optimizer steps in total (seed 000 flag).")
@click.option("--time-limit", "time_limit", metavar="DURATION",
              help="Checkpoint and stop after this long (e.g. 9m); continue with --resume.")
@click.option("--eval-every", "--eval_every_n", "eval_every", type=click.IntRange(1),
              help="Also evaluate every N steps (default: each epoch end).")
@click.option("--log-every", default=50, show_default=True, type=click.IntRange(1),
              help="TensorBoard scalar period in steps.")
@click.option("--histogram-every", default=1, show_default=True, type=click.IntRange(0),
              help="Weight/activation histogram period in epochs (0: never).")
@click.option("--checkpoint-every", default="10m", show_default=True, metavar="DURATION",
              help="Mid-epoch checkpoint period (checkpoints are also written at epoch ends).")
@click.option("--train-subset", type=click.IntRange(1), help="Use only N training samples.")
@click.option("--test-subset", type=click.IntRange(1), help="Use only N test samples.")
@click.option("--threads", type=click.IntRange(1), help="CPU threads for torch.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bars.")
@click.option("--tensorboard/--no-tensorboard", default=True, show_default=True,
              help="Write TensorBoard events into the run directory.")
@click.option("--download/--no-download", default=True, show_default=True,
              help="Download missing dataset files (checksum-verified).")
@click.option("--xnor", is_flag=True,
              help="Seed 000 flag: binary layers' forward pass on the packed-bit GPU kernels "
                   "(needs --device cuda and Triton; same results as the float simulation).")
@click.option("--debug", is_flag=True, help="Seed 000 flag: autograd anomaly detection, full tracebacks.")
@click.option("--list-hparams", is_flag=True, help="List MODEL's hyperparameter sets and exit.")
def train(model, dataset, hparams_set, hparams, epochs, batch_size, lr, reg, binary, batch_norm,
          n_hidden, log_dir, run_dir, resume, device, data_dir, seed, max_steps, time_limit,
          eval_every, log_every, histogram_every, checkpoint_every, train_subset, test_subset,
          threads, progress, tensorboard, download, xnor, debug, list_hparams):
    """Train MODEL on a dataset and record the run.

    Each run gets a directory <log-dir>/<model>-<dataset>-<set>[-overrides]-<N> with
    config.json, TensorBoard events (loss, accuracy, learning rate, flip ratio, weight and
    activation histograms), checkpoint.pt (atomic; --resume continues exactly at the step),
    model.pt and metrics.json. Precedence: hparams set < --hparams < explicit flags.
    """
    from xnorkit.train.hparams import (
        apply_overrides,
        describe_hparams,
        get_hparams,
        list_hparams as _list,
        parse_overrides,
    )
    from xnorkit.data import DatasetError
    from xnorkit.train.trainer import RunConfig, fit

    if list_hparams:
        names = _list(model)
        if not names:
            click.echo(f"{model}: no named sets (the 'default' set is HParams())")
        for n in names:
            click.echo(f"{n:34s} {describe_hparams(model, n)}")
        return
    if not dataset:
        raise click.UsageError("--dataset is required (mnist, fashion_mnist or cifar10)")
    if debug:
        import torch

        torch.autograd.set_detect_anomaly(True)
    try:
        hp = get_hparams(model, hparams_set)
        overrides = parse_overrides(list(hparams))
        flags = {"epochs": epochs, "batch_size": batch_size, "learning_rate": lr, "l1": reg}
        overrides |= {k: v for k, v in flags.items() if v is not None}
        # Seed 000's MLP flags map onto binarynet_mlp's arguments.
        model_flags = {"binary": binary, "batch_norm": batch_norm, "hidden_units": n_hidden}
        overrides |= {f"model.{k}": v for k, v in model_flags.items() if v is not None}
        hp = apply_overrides(hp, overrides)
        hp.validate()
        cfg = RunConfig(model=model, dataset=dataset, hparams=hp, hparams_set=hparams_set,
                        overrides=overrides, seed=seed, device=device, data_dir=data_dir,
                        log_dir=log_dir, run_dir=run_dir, resume=resume, max_steps=max_steps,
                        time_limit=parse_duration(time_limit), eval_every=eval_every,
                        log_every=log_every, histogram_every=histogram_every,
                        checkpoint_every=parse_duration(checkpoint_every) or 0.0,
                        train_subset=train_subset, test_subset=test_subset, progress=progress,
                        tensorboard=tensorboard, threads=threads, download=download, xnor=xnor)
        if int(os.environ.get("RANK", "0")) == 0:
            _print_config(cfg, cfg.name())
        metrics = fit(cfg)
    except (ValueError, FileNotFoundError, DatasetError) as exc:
        if debug:
            raise
        raise click.ClickException(str(exc)) from exc
    if int(os.environ.get("RANK", "0")) == 0:
        _print_summary(metrics)


def _print_summary(m: dict) -> None:
    from rich.console import Console

    c = Console(stderr=True)
    status = "finished" if m["finished"] else f"stopped ({m['stopped_by']}); continue with --resume"
    acc = m.get("test_accuracy")
    c.print(f"[bold]{status}[/bold]: {m['epochs_completed']}/{m['epochs']} epochs, "
            f"{m['global_step']} steps, {m['wall_time_s']:.1f} s"
            + (f", test accuracy {acc:.4f}" if acc is not None else ""))
    c.print(f"run directory: {m['run_dir']}", soft_wrap=True)


def _resolve_model_file(path: Path) -> Path:
    from xnorkit.train.checkpoint import CHECKPOINT, FINAL_MODEL

    if path.is_dir():
        for name in (FINAL_MODEL, CHECKPOINT):
            if (path / name).is_file():
                return path / name
        raise click.BadParameter(f"{path}: no {FINAL_MODEL} or {CHECKPOINT} in this directory")
    if not path.is_file():
        raise click.BadParameter(f"{path}: no such file or directory")
    return path


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--dataset", "-d", help="Dataset (default: the one the model was trained on).")
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="XNORKIT_DATA",
              help="Dataset root [env XNORKIT_DATA].")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:K.")
@click.option("--batch-size", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--subset", type=click.IntRange(1), help="Evaluate only N (class-balanced) samples.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def evaluate(path, dataset, split, data_dir, device, batch_size, subset, as_json):
    """Evaluate a trained model: PATH is a run directory, model.pt or checkpoint.pt."""
    from xnorkit.data import DatasetError
    from xnorkit.train.evaluate import evaluate_file

    try:
        res = evaluate_file(_resolve_model_file(path), dataset=dataset, split=split,
                            data_dir=data_dir, device=device, batch_size=batch_size, subset=subset)
    except (ValueError, FileNotFoundError, DatasetError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        json.dump(res, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        click.echo(f"{res['model']} on {res['dataset']}/{res['split']} ({res['count']} samples): "
                   f"accuracy {res['accuracy']:.4f}, loss {res['loss']:.4f}")
