"""CPU inference throughput of the slice CNN: slices per second at batch 32.

Measures, in one run and on the same random batch, PyTorch eager (float32) and - when
onnxruntime is installed - the same network exported to ONNX and run by ONNX Runtime, and
prints the rates and their ratio. Speed does not depend on the weights, so the default
backbone is built untrained; ``--run RUN`` measures a trained run's slice model instead and
also times the whole Predictor (slice CNN + sequence model) on one phantom series.

    python benchmarks/bench_inference.py                       # efficientnet_b0, 256 px
    python benchmarks/bench_inference.py --backbone resnet10t --size 128
    python benchmarks/bench_inference.py --run ich-demo/run --json out.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


def rate(fn: Callable[[], object], n_slices: int, repeats: int) -> float:
    """Slices per second of ``fn`` (one warm-up call, then the best of ``repeats``)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n_slices / best


def onnx_rate(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float | None:
    """ONNX Runtime slices/s for the same model and batch, or None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "slice.onnx"
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated but exact here
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["logits"],
                              dynamic_axes={"x": {0: "batch"}}, dynamo=False)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        feed = {"x": x.numpy()}
        return rate(lambda: session.run(None, feed), len(x), repeats)


def main() -> None:
    """Parse options, measure, print and optionally save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="efficientnet_b0")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run", type=Path, default=None, help="a trained run folder")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from ich.models.slice_cnn import SliceModel

    if args.run is not None:
        from ich.inference import Predictor

        predictor = Predictor.from_run(args.run)
        run = predictor.runs[0]
        model, size, chans = run.slice_model, run.input_size, run.channels.n_channels
        backbone = run.backbone
    else:
        model = SliceModel(args.backbone, in_chans=args.channels)
        size, chans, backbone = args.size, args.channels, args.backbone
    model = model.eval()
    x = torch.rand(args.batch, chans, size, size)
    with torch.inference_mode():
        eager = rate(lambda: model(x), args.batch, args.repeats)
    ort_rate = onnx_rate(model, x, args.repeats)
    results: dict[str, object] = {
        "backbone": backbone, "size": size, "channels": chans, "batch": args.batch,
        "threads": torch.get_num_threads(), "torch_eager_slices_per_s": round(eager, 1),
    }
    print(f"{backbone} {size} px, {chans} channels, batch {args.batch}, "
          f"{torch.get_num_threads()} threads")
    print(f"  PyTorch eager (float32): {eager:8.1f} slices/s")
    if ort_rate is not None:
        results["onnxruntime_slices_per_s"] = round(ort_rate, 1)
        results["onnxruntime_vs_eager"] = round(ort_rate / eager, 2)
        print(f"  ONNX Runtime (float32):  {ort_rate:8.1f} slices/s  ({ort_rate / eager:.2f}x)")
    if args.run is not None:
        images = np.zeros((40, run.preprocess.size, run.preprocess.size), np.int16)
        spacing = np.full(40, 5.0, np.float32)
        whole = rate(lambda: predictor.predict_preprocessed(images, spacing), 40, args.repeats)
        results["predictor_slices_per_s"] = round(whole, 1)
        print(f"  Predictor, 40-slice series (CNN + sequence model): {whole:8.1f} slices/s")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
