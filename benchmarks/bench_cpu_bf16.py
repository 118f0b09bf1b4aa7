"""float32 vs bfloat16 autocast for the slice CNN on the CPU, side by side.

Training runs in float32 on the CPU (``train.amp`` is CUDA-only). Could bfloat16 autocast buy the
time for a larger demo input on CPUs with bfloat16 matrix units (AMX)? This measures, in one
process and on the same random batch, a training step (forward, backward, AdamW step) of the
demo's channels-last model in float32 and under ``torch.autocast("cpu", torch.bfloat16)``,
alternating the two for ``--repeats`` rounds, and prints slices/s and the ratio.

    python benchmarks/bench_cpu_bf16.py --backbone efficientnet_lite0 --sizes 128 --threads 2
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_layout import parse_model_args, rate

from ich.models.slice_cnn import SliceModel


def measure(backbone: str, size: int, batch: int, repeats: int) -> dict[str, float]:
    """Best training slices/s of ``repeats`` alternating rounds, float32 and bfloat16."""
    torch.manual_seed(0)
    model = SliceModel(backbone, in_chans=3).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, size, size)
    y = torch.randint(0, 2, (batch, 6)).float()

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    best: dict[str, float] = {}
    for _ in range(repeats):
        for name, bf16 in (("float32", False), ("bfloat16", True)):
            best[name] = max(best.get(name, 0.0), rate(lambda: step(bf16), batch))  # noqa: B023
    return best


def main() -> None:
    args = parse_model_args(__doc__.splitlines()[0], sizes=[128], repeats=3)
    print(f"{args.backbone}, batch {args.batch}, {torch.get_num_threads()} threads (CPU), "
          f"training step slices/s")
    print(f"{'size':>5} {'float32':>8} {'bfloat16':>9} {'ratio':>6}")
    for size in args.sizes:
        r = measure(args.backbone, size, args.batch, args.repeats)
        print(f"{size:>5} {r['float32']:>8.1f} {r['bfloat16']:>9.1f} "
              f"{r['bfloat16'] / r['float32']:>5.2f}x")


if __name__ == "__main__":
    main()
