"""``ich train CACHE --out RUN``: train the slice CNN and the study sequence model."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ich.errors import ConfigError

if TYPE_CHECKING:
    from ich.train.state import TrainSummary

EXAMPLE = "ich train cache/ --out runs/r1 --config demo model.backbone=resnet18 train.epochs=3"


class _IntermixedParser(argparse.ArgumentParser):
    """Lets ``key=value`` overrides follow options (``ich train C --out R train.epochs=3``).

    Plain argparse assigns all positionals from the first run of them (before ``--out``) and
    rejects later ones; intermixed parsing collects positionals from anywhere.
    """

    _inner = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._inner:
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Register ``ich train``."""
    saved = sub._parser_class
    sub._parser_class = _IntermixedParser
    try:
        p = _make(sub, name, help_text)
    finally:
        sub._parser_class = saved
    _options(p)
    p.set_defaults(func=run)


def _make(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=(
            "Train the slice CNN (stage 1) and the study sequence model (stage 2) on a cache "
            "built by `ich prepare`. Settings come from the defaults, then --config, then "
            "key=value overrides; the resolved config is saved to RUN/config.yaml. "
            f"Example: {EXAMPLE}. Multi-GPU: torchrun --nproc_per_node=N -m ich.cli train ..."
        ),
    )
    return p


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("cache", type=Path, nargs="?", help="cache folder (from `ich prepare`)")
    p.add_argument("--out", type=Path, help="run folder to create (or continue)")
    p.add_argument("--config", help="YAML config file, or a packaged one: default, demo")
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN",
        help="continue RUN from its last checkpoint with its saved config",
    )
    p.add_argument(
        "--stage",
        choices=("all", "slice", "sequence"),
        default="all",
        help="run both stages (default) or one; `sequence` needs a slice checkpoint",
    )
    p.add_argument(
        "--all-folds",
        action="store_true",
        help="train one run per fold (OUT/fold<k>) and the sequence models on out-of-fold "
        "embeddings of every slice; predict/serve/evaluate take OUT as the k-run ensemble",
    )
    p.add_argument(
        "--ddp",
        action="store_true",
        help="expect to be launched by torchrun (fails if WORLD_SIZE is not set)",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (defaults, --config, overrides) as YAML and exit; "
        "every key is described in docs/config.md",
    )
    p.add_argument("--backbone", help="timm backbone name (= model.backbone=NAME)")
    p.add_argument(
        "--pretrained",
        action="store_true",
        help="start from timm's pretrained weights (needs the machine to reach them)",
    )
    p.add_argument(
        "--weights", type=Path, help="start from a local weights file (.pth or .safetensors)"
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. train.epochs=3 optim.lr=3e-4",
    )


def run(args: argparse.Namespace) -> int:
    """Resolve the config, check everything that can be checked, call the training."""
    from ich.config import load_config
    from ich.runs.foldset import is_fold_set
    from ich.train.distributed import env_world_size

    cache, out, overrides = args.cache, args.out, list(args.overrides)
    # The model shortcuts are overrides like any other (and come first, so k=v still wins).
    shortcuts = [
        f"model.backbone={args.backbone}" if args.backbone else None,
        "model.pretrained=true" if args.pretrained else None,
        f"model.weights={args.weights}" if args.weights else None,
    ]
    overrides = [s for s in shortcuts if s] + overrides
    if cache is not None and "=" in str(cache):  # `ich train --resume RUN k=v`: no CACHE
        overrides.insert(0, str(cache))
        cache = None
    all_folds = args.all_folds
    if args.print_config:
        import yaml

        from ich.config import config_to_dict

        source = args.config or (args.resume / "config.yaml" if args.resume else "default")
        cfg = load_config(source, overrides)
        if cache is not None:
            cfg.data.cache = str(cache)
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), end="")
        return 0
    if args.resume is not None:
        run_dir = args.resume
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"--resume {run_dir}: not a run folder (no config.yaml)")
        cfg = load_config(args.config or run_dir / "config.yaml", overrides)
        if out is not None and out.resolve() != run_dir.resolve():
            raise ConfigError("--resume continues RUN in place; drop --out or make it RUN")
        all_folds = all_folds or is_fold_set(run_dir)  # a fold set resumes as one
    else:
        if out is None:
            raise ConfigError("--out RUN is required (the run folder to create)")
        run_dir = out
        # Without --config: the packaged recipe (the dataclass defaults hold the same values).
        cfg = load_config(args.config or "default", overrides)
    cache = cache or (Path(cfg.data.cache) if cfg.data.cache else None)
    if cache is None:
        raise ConfigError("no cache given: pass CACHE or set data.cache")
    cfg.data.cache = str(cache)
    if args.ddp and env_world_size() <= 1:
        raise ConfigError("--ddp: WORLD_SIZE is not set; launch with torchrun --nproc_per_node=N")
    if all_folds and args.stage != "all":
        raise ConfigError("--all-folds trains both stages; drop --stage")
    stages = tuple(cfg.train.stages) if args.stage == "all" else (args.stage,)
    main = int(os.environ.get("RANK", "0")) == 0
    notes = preflight(cfg, Path(cache), run_dir, stages, args.resume is not None, all_folds)
    with log_to(run_dir / "train.log") if main else contextlib.nullcontext():
        for note in notes if main else []:
            print(note, flush=True)
        return _train(cfg, Path(cache), run_dir, stages, args.resume is not None, all_folds, main)


def _train(cfg: Any, cache: Path, run_dir: Path, stages: tuple[str, ...], resume: bool,
           all_folds: bool, main: bool) -> int:
    """Announce, train (one run or a fold set), choose thresholds, report."""
    if main:
        _announce(cfg, run_dir, stages, resume, all_folds)
    if all_folds:
        from ich.train.foldset import run_fold_set

        summary = run_fold_set(cfg, cache, run_dir, resume=resume)
        _thresholds(cfg, run_dir)
        _report(summary)
        return 0
    from ich.train.runner import run_training

    summary = run_training(cfg, cache, run_dir, stages=stages, resume=resume and "slice" in stages)
    if main:
        _thresholds(cfg, run_dir)
        _report(summary)
    return 0


def _thresholds(cfg: Any, run_dir: Path) -> None:
    """Choose the run's per-label thresholds (its own labels) on its out-of-fold predictions,
    when it has any."""
    from ich.errors import CheckpointError
    from ich.eval.thresholds import thresholds_from_oof

    try:
        path = thresholds_from_oof(run_dir, None, cfg.decision.method,
                                   cfg.decision.target_sensitivity)
    except CheckpointError as exc:
        print(f"  no decision thresholds: {exc}")
        return
    rule = ("Youden's J" if cfg.decision.method == "youden"
            else f"sensitivity >= {cfg.decision.target_sensitivity:g}")
    print(f"  decision thresholds ({rule}, out of fold): {path}")


def preflight(
    cfg: Any, cache: Path, run_dir: Path, stages: tuple[str, ...], resume: bool, all_folds: bool
) -> list[str]:
    """Every check that can fail before training, run before anything is written.

    Why: a run that fails after creating its folder leaves a half-made run behind (which the
    next attempt then refuses or, worse, mixes with); a GPU that is not there, a weights file
    for another backbone or an unlabelled cache are known before the first batch.

    Returns:
        Lines to print once training starts (e.g. the pretrained fallback).

    Raises:
        ConfigError, CacheError, CheckpointError: naming the setting or file at fault.
    """
    from ich.config import RunConfig
    from ich.data.cache import SliceCache
    from ich.devices import check_device
    from ich.models.slice_cnn import check_backbone

    assert isinstance(cfg, RunConfig)
    check_device(cfg.train.device)
    if cfg.data.fold >= cfg.data.folds or cfg.data.fold < -1:
        raise ConfigError(f"data.fold={cfg.data.fold} but data.folds={cfg.data.folds}")
    sc = SliceCache(cache)
    if not (~np.isnan(sc.labels).any(axis=1)).any():
        raise ConfigError(f"{cache}: no labelled slices; build the cache with --labels to train")
    check_backbone(cfg.model.backbone)
    if not resume:
        _refuse_finished(run_dir, stages, all_folds)
    if "slice" not in stages or resume:
        return []
    if cfg.model.weights:
        from ich.models.slice_cnn import build_slice_model

        n_chans = len(cfg.data.windows) * len(cfg.data.offsets)
        build_slice_model(backbone=cfg.model.backbone, in_chans=n_chans, weights=cfg.model.weights)
    elif cfg.model.pretrained:
        from ich.models.hub import pretrained_unavailable

        reason = pretrained_unavailable(cfg.model.backbone)
        if reason is not None:
            cfg.model.pretrained = False  # the saved config says what really happened
            os.environ["HF_HUB_OFFLINE"] = "1"
            return [f"ich train: no pretrained weights for {cfg.model.backbone} ({reason}; not "
                    "in the local cache): training from scratch. Pass --weights PATH to start "
                    "from a downloaded file."]
    return []


def _refuse_finished(run_dir: Path, stages: tuple[str, ...], all_folds: bool) -> None:
    """Refuse to train over an existing run (``--stage sequence`` on a run is the exception)."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir}: exists and is not a folder")
    marks = ["foldset.json", "config.yaml", "checkpoints/slice_last.safetensors",
             "checkpoints/slice_best.safetensors"]
    found = [m for m in marks if (run_dir / m).exists()]
    if not found:
        if any(p.name != "train.log" for p in run_dir.iterdir()):  # a log alone: failed early
            raise ConfigError(f"--out {run_dir}: exists and is not empty; choose a new folder")
        return
    if stages == ("sequence",) and not all_folds:
        return  # stage 2 on a trained run is how a sequence model is retrained
    raise ConfigError(
        f"--out {run_dir}: already holds a run ({', '.join(found)}); continue it with "
        f"`ich train --resume {run_dir}`, or choose a new --out"
    )


def _announce(
    cfg: object, run_dir: Path, stages: tuple[str, ...], resume: bool, all_folds: bool = False
) -> None:
    from ich.config import RunConfig

    assert isinstance(cfg, RunConfig)
    init = (
        "local weights " + cfg.model.weights
        if cfg.model.weights
        else "timm pretrained weights"
        if cfg.model.pretrained
        else "from scratch"
    )
    print(f"ich train: {'resuming' if resume else 'training'} {' + '.join(stages)} into {run_dir}")
    print(
        f"  slice model: {cfg.model.backbone} ({init}), {cfg.data.input_size} px, windows "
        f"{','.join(cfg.data.windows)} x offsets {list(cfg.data.offsets)}, "
        f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}"
    )
    print(
        f"  sequence model: {cfg.sequence.kind}, hidden {cfg.sequence.hidden}, "
        f"{cfg.sequence.epochs} epochs; validation fold "
        + (f"each of {cfg.data.folds} (--all-folds)" if all_folds
           else f"{cfg.data.fold} of {cfg.data.folds}")
    )
    sys.stdout.flush()


#: Summary key -> what its weighted log loss measures.
_SCORES = {
    "slice_wll": "validation weighted log loss, slice",
    "slice_wll_tta": "validation weighted log loss, slice tta",
    "sequence_wll": "validation weighted log loss, sequence",
    "oof_slice_wll": "out-of-fold weighted log loss over all folds, slice model",
    "oof_sequence_wll": "out-of-fold weighted log loss over all folds, sequence model",
}


def _report(summary: TrainSummary) -> None:
    for key, text in _SCORES.items():
        value = summary.scores.get(key)
        if isinstance(value, float):
            print(f"  {text}: {value:.4f}")
    if summary.fold_runs:
        print(f"fold set: {summary.run_dir} (foldset.json, fold<k>/ runs, "
              "oof_predictions.parquet); predict, serve and evaluate take it as one model")
        return
    print(
        f"run folder: {summary.run_dir} (config.yaml, metrics.jsonl, checkpoints/, "
        "oof_predictions.parquet)"
    )


class _Tee(io.TextIOBase):
    """Writes to a stream and to the run's log file (progress-bar redraws only to the stream)."""

    def __init__(self, stream: Any, log: Any) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.stream.write(text)
        if "\r" not in text:  # tqdm redraws: noise in a file
            self.log.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return bool(self.stream.isatty())

    def fileno(self) -> int:
        return int(self.stream.fileno())


@contextlib.contextmanager
def log_to(path: Path) -> Iterator[None]:
    """Copy everything ``ich train`` prints (stdout and stderr) into ``RUN/train.log``.

    Appends, so a resumed run's log follows the first part; each invocation starts with a
    header line saying when and with which command line.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
        log.write(f"== {stamp}: ich {' '.join(sys.argv[1:])}\n")
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err
