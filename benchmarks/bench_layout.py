"""Channels-last vs the default (NCHW-contiguous) layout for the slice CNN, side by side.

``SliceModel`` keeps its backbone channels-last. This measures, in one process and on the same
random batches, a training step (forward, backward, AdamW step) and batched inference of the
same weights in both layouts, and prints slices/s and the ratio.

    python benchmarks/bench_layout.py --backbone efficientnet_lite0 --sizes 96 128 --threads 2
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from ich.models.slice_cnn import SliceModel


def rate(step: Callable[[], None], batch: int) -> float:
    """Slices per second of one call of ``step``, after one warm-up call."""
    step()
    start = time.perf_counter()
    step()
    return batch / (time.perf_counter() - start)


def measure(backbone: str, size: int, batch: int, repeats: int) -> dict[str, float]:
    """Training and inference slices/s in the default layout and channels-last, alternating
    the two for ``repeats`` rounds (the machine's drift hits both alike); best round each."""
    torch.manual_seed(0)
    model = SliceModel(backbone, in_chans=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, size, size)
    y = torch.randint(0, 2, (batch, 6)).float()

    mean, std = model._mean_std()

    def plain(inputs: torch.Tensor) -> torch.Tensor:
        """The model's forward without its channels-last conversion (the baseline)."""
        out: torch.Tensor = model.head(model.backbone((inputs - mean) / std))
        return out

    def train_step(forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
        model.train()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(forward(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    @torch.no_grad()
    def infer(forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
        model.eval()
        forward(x)

    best: dict[str, float] = {}
    for _ in range(repeats):
        for layout, forward in (("contiguous", plain), ("channels_last", model)):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            model.backbone.to(memory_format=fmt)
            for what, step in (("train", train_step), ("infer", infer)):
                r = rate(lambda: step(forward), batch)  # noqa: B023 (called right here)
                key = f"{what}_{layout}"
                best[key] = max(best.get(key, 0.0), r)
    return best


def parse_model_args(description: str, sizes: list[int], repeats: int) -> argparse.Namespace:
    """The slice-CNN benchmarks' command line (backbone, sizes, batch, repeats, threads);
    sets the torch thread count it names."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--sizes", type=int, nargs="+", default=sizes)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def main() -> None:
    args = parse_model_args(__doc__.splitlines()[0], sizes=[96, 128], repeats=5)
    print(f"{args.backbone}, batch {args.batch}, {torch.get_num_threads()} threads (CPU)")
    print(f"{'size':>5} {'what':>6} {'contiguous':>11} {'ch-last':>8} {'ratio':>6}  slices/s")
    for size in args.sizes:
        r = measure(args.backbone, size, args.batch, args.repeats)
        for what in ("train", "infer"):
            a, b = r[f"{what}_contiguous"], r[f"{what}_channels_last"]
            print(f"{size:>5} {what:>6} {a:>11.1f} {b:>8.1f} {b / a:>5.2f}x")


if __name__ == "__main__":
    main()
