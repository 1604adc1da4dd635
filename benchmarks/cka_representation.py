"""A conv neuron in CKA: its whole feature map or its spatial mean — accuracy vs fraction removed at a few Θ.

For the two bundled CNNs (models/cnn_digits.onnx, models/jax_cnn_digits.onnx) and torchvision resnet18 trained
here briefly on digits upscaled to 32x32 (seeded, CPU), each model is profiled once on digits:train (the profile
holds both representations), sliced semantically at each Θ with each representation (on the model's channel
groups, round-to 1 so that only the representation differs), masked and evaluated on digits:test, without
fine-tuning. Removed = the fraction of parameters restructuring the slice removes. One run on one machine.

    python benchmarks/cka_representation.py [--thetas 0.9 0.95 0.98 0.99] [--epochs 3] [--metric taylor]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from onnxslice.data import DataSource, load_data  # noqa: E402
from onnxslice.graph import load_model  # noqa: E402
from onnxslice.measure.evaluate import accuracy  # noqa: E402
from onnxslice.profiling import profile_model  # noqa: E402
from onnxslice.slicing.groups import SelectionGroups  # noqa: E402
from onnxslice.slicing.strategies import make_strategy, select  # noqa: E402
from onnxslice.surgery.mask import mask_model  # noqa: E402
from tests.helpers import digits32, export_onnx, resnet18_digits  # noqa: E402


def train_resnet18(data: DataSource, epochs: int, seed: int = 0) -> torch.nn.Module:
    """resnet18 (1 x 32 x 32, 10 classes) trained with Adam (lr 1e-3, batch 64) for ``epochs`` epochs."""
    torch.manual_seed(seed)
    module = resnet18_digits()
    x, y = (torch.from_numpy(a) for a in data.arrays())
    optimiser = torch.optim.Adam(module.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        module.train()
        for batch in torch.randperm(len(y), generator=generator).split(64):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(module(x[batch]), y[batch]).backward()
            optimiser.step()
    return module.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thetas", type=float, nargs="+", default=[0.9, 0.95, 0.98, 0.99])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--metric", default="taylor")
    parser.add_argument("--max-per-class", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        resnet = export_onnx(train_resnet18(digits32("train"), args.epochs), (1, 32, 32), folder / "resnet18.onnx")
        cases = [("cnn_digits", ROOT / "models" / "cnn_digits.onnx", load_data("digits:train"),
                  load_data("digits:test")),
                 ("jax_cnn_digits", ROOT / "models" / "jax_cnn_digits.onnx", load_data("digits:train"),
                  load_data("digits:test")),
                 (f"resnet18 ({args.epochs} epochs)", resnet, digits32("train"), digits32("test"))]
        print(f"semantic slices, metric {args.metric}, masked, no fine-tuning; digits:test accuracy / parameters "
              "removed by restructuring")
        print(f"{'model':<22}{'original':>9}{'theta':>7}{'mean: removed':>15}{'accuracy':>9}{'map: removed':>14}"
              f"{'accuracy':>9}")
        for label, path, train, test in cases:
            model = load_model(path)
            profile = profile_model(str(path), train, [args.metric], max_per_class=args.max_per_class,
                                    device="cpu", progress=False)
            groups = SelectionGroups.of_model(model)
            original = accuracy(model, test, "cpu")["accuracy"]
            for theta in args.thetas:
                row = []
                for representation in ("mean", "map"):
                    strategy = make_strategy("semantic", theta=theta, representation=representation)
                    piece = select(profile, args.metric, strategy, groups, round_to=1)
                    removed = 1.0 - piece.restructured["params_fraction"]
                    row += [removed, accuracy(mask_model(model, piece.kept()), test, "cpu")["accuracy"]]
                print(f"{label:<22}{original:>9.3f}{theta:>7.2f}{row[0]:>15.1%}{row[1]:>9.3f}{row[2]:>14.1%}"
                      f"{row[3]:>9.3f}", flush=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
