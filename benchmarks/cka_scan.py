"""Exact prefix-scan CKA vs recomputing CKA from scratch at every step (step i = 1).

One 512-neuron dense layer, 256 samples (random ReLU activations): the scan computes H once and
then every prefix's CKA from prefix sums; the baseline rebuilds the subset's Gram matrix and the CKA
at each of the 512 steps, as Algorithm 1 does literally. Prints both times and their ratio, and the
largest relative difference between the two curves, with H computed as profiling does (float32 products)
and with float64 products. Goal: ratio ≥ 200.

    python benchmarks/cka_scan.py [--neurons 512] [--samples 256]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # a shared machine: one BLAS thread, before numpy loads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402

import numpy as np  # noqa: E402
from timing import best_time  # noqa: E402

from onnxslice.profiling.similarity import cka_from_scratch, prefix_cka, similarity_statistics  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=512)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--positions", type=int, default=1, help="spatial positions per neuron (1 = dense layer)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs of each")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    acts = np.maximum(rng.standard_normal((args.samples, args.neurons, args.positions)), 0.0)
    order = rng.permutation(args.neurons)

    h = similarity_statistics(acts).matrix()
    scratch = np.array([cka_from_scratch(acts, order[:k]) for k in range(1, args.neurons + 1)])
    build = best_time(lambda: similarity_statistics(acts).matrix(), args.repeats)
    scan = best_time(lambda: prefix_cka(h, order), args.repeats)
    baseline = best_time(lambda: [cka_from_scratch(acts, order[:k]) for k in range(1, args.neurons + 1)],
                         args.repeats)

    print(f"layer: {args.neurons} neurons x {args.positions} positions, {args.samples} samples, step 1; "
          f"best of {args.repeats} runs")
    print("| method | seconds |")
    print("|---|---|")
    print(f"| exact scan: H ({build:.4f} s) + prefix sums ({scan:.4f} s) | {build + scan:.4f} |")
    print(f"| CKA from scratch at each of {args.neurons} steps | {baseline:.3f} |")
    print(f"ratio (from scratch / exact scan): {baseline / (build + scan):.0f}x  (goal >= 200x)")
    for precision in (np.float32, np.float64):
        scanned = prefix_cka(similarity_statistics(acts, precision).matrix(), order)
        print(f"max relative difference of the two CKA curves, H in {precision.__name__}: "
              f"{np.max(np.abs(scanned - scratch) / scratch):.2e}")


if __name__ == "__main__":
    main()
