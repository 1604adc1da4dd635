"""Profiles, sweeps and compression on Ray (a local Ray of 2 CPUs, shared by the tests of this module): the same
results as in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import onnxslice as osl
from onnxslice.data import load_data
from onnxslice.errors import InputError
from onnxslice.profiling import Profile
from onnxslice.profiling.metrics import metrics_by_name
from onnxslice.profiling.profiler import cka_samples, prepare_profile, reads_means_only, rest_block
from onnxslice.profiling.sharded import plan_shards
from onnxslice_cli.main import cli
from tests.helpers import CNN, MLP
from tests.ray_hooks import ARM

ray = pytest.importorskip("ray")  # the extra onnxslice[ray], part of onnxslice[test]
ROOT = Path(__file__).resolve().parents[1]
METRICS = ["avg", "var", "taylor"]


@pytest.fixture(scope="module")
def armed(tmp_path_factory) -> Path:
    """The file whose existence makes the next Ray worker that profiles a block die (see tests/ray_hooks.py)."""
    return tmp_path_factory.mktemp("ray") / "die"


@pytest.fixture(scope="module", autouse=True)
def local_ray(armed):
    """A local Ray with 2 CPUs whose workers import this tree and can be made to die once."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={
        "worker_process_setup_hook": "tests.ray_hooks.die_once_when_armed",
        "env_vars": {ARM: str(armed), "PYTHONPATH": path}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def sorted_digits(tmp_path_factory) -> str:
    """digits:train ordered by label, as a .npz the workers open: a shard of it holds a few categories only."""
    x, y = load_data("digits:train").arrays()
    order = np.argsort(y, kind="stable")
    path = tmp_path_factory.mktemp("data") / "sorted.npz"
    np.savez(path, x=x[order], y=y[order])
    return str(path)


def in_one_process(*args, **kwargs) -> Profile:
    """``osl.profile`` here, with PyTorch on one thread as in the Ray tasks (a CPU each): PyTorch's gradients change
    with its thread count (taylor of the MLP by 4e-9 relative between 1 and 2 threads), onnxruntime's outputs do
    not."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return osl.profile(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def assert_same_profile(sharded: Profile, single: Profile) -> None:
    """Contributions within 1e-10 of each layer's largest (sums added in another order round differently), the
    CKA statistics H identical (the same samples through the same batches), everything else equal."""
    assert (sharded.categories, sharded.samples, sharded.layer_sizes, sharded.excluded, sharded.metrics) == \
        (single.categories, single.samples, single.layer_sizes, single.excluded, single.metrics)
    for metric in single.metrics:
        for layer in single.layers:
            expected = single.contributions[metric][layer]
            np.testing.assert_allclose(sharded.contributions[metric][layer], expected, rtol=0,
                                       atol=1e-10 * np.abs(expected).max())
    assert sharded.mean_similarity.keys() == single.mean_similarity.keys()
    for statistics, expected in ((sharded.similarity, single.similarity),
                                 (sharded.mean_similarity, single.mean_similarity)):
        for layer, per_category in expected.items():
            for got, want in zip(statistics[layer], per_category, strict=True):
                assert np.array_equal(got.centred, want.centred) and np.array_equal(got.correction, want.correction)
                assert got.factor == want.factor


@pytest.mark.parametrize(("model", "batch_size"), [(MLP, 64), (MLP, 7), (CNN, 7)],
                         ids=["mlp", "mlp-means-session", "cnn-means-session"])
def test_a_profile_in_shards_equals_the_profile_in_one_process(sorted_digits, model, batch_size):
    """Oracle: the same profile made in this process (:func:`in_one_process`). Four shards of digits ordered by
    label, so that shards hold no sample of some categories (checked on the plan); batch size 7 makes the samples
    after the CKA ones enough batches to be read through the session of spatial means, which every shard must then
    use as well."""
    data = load_data(sorted_digits)
    chosen = metrics_by_name(METRICS)
    setup = prepare_profile(osl.load(model).proto, data, chosen, "cpu")
    first, rest = cka_samples(setup.data.labels, setup.categories, 5)
    means_only = reads_means_only(len(rest), batch_size, chosen)
    assert means_only == (batch_size == 7)
    plan = plan_shards(first, rest, rest_block(setup, batch_size, chosen, means_only), 4, len(data))
    held = [set(data.labels[[p for p in rest if shard.start <= p < shard.stop]]) for shard in plan]
    assert len(plan) == 4 and all(categories < set(setup.categories) for categories in held)

    single = in_one_process(model, sorted_digits, METRICS, max_per_class=5, batch_size=batch_size, device="cpu")
    sharded = osl.profile(model, sorted_digits, METRICS, max_per_class=5, batch_size=batch_size, device="cpu",
                          ray="local", shards=4)
    assert_same_profile(sharded, single)


def test_a_profile_survives_a_worker_that_dies_mid_shard(armed):
    """Oracle: the profile made in this process. A worker process ends itself (``os._exit``) in the middle of its
    shard; Ray runs that shard again on a new worker and the profile is the same. The removed file shows that a
    worker did die."""
    armed.touch()
    sharded = osl.profile(CNN, "digits:train", METRICS, max_per_class=8, device="cpu", ray="local")
    assert not armed.exists()
    assert_same_profile(sharded, in_one_process(CNN, "digits:train", METRICS, max_per_class=8, device="cpu"))


def test_a_worker_that_cannot_open_the_data_fails_the_profile_with_its_own_error(tmp_path):
    """Oracle: the error the worker raises (the data file was removed after the driver opened it) reaches the
    caller as itself, an InputError naming the file, and no profile comes back."""
    x, y = load_data("digits:val").arrays()
    np.savez(tmp_path / "gone.npz", x=x, y=y)
    data = load_data(str(tmp_path / "gone.npz"))
    (tmp_path / "gone.npz").unlink()
    with pytest.raises(InputError, match="gone.npz: no such data file"):
        osl.profile(MLP, data, ["avg"], device="cpu", ray="local")


def test_sweep_and_compress_on_ray_give_the_points_of_one_process():
    """Oracle: the same calls without Ray. Every sweep point is evaluated in its own task; compress evaluates two
    sparsity steps at once (the candidates made ahead), and must stop at the same step with the same model."""
    model = osl.load(MLP)
    profile = osl.profile(model, "digits:train", ["avg"], max_per_class=20)
    sweep = {"strategies": ["semantic", "global"], "thetas": [0.9, 0.99], "ratios": [0.3, 0.6], "metrics": ["avg"],
             "eval_data": "digits:val", "device": "cpu"}
    assert osl.sweep(model, profile, "digits:train", ray="local", **sweep).points == \
        osl.sweep(model, profile, "digits:train", **sweep).points
    piece = osl.select(model, profile, "avg", "semantic", theta=0.99)
    settings = {"step": 0.3, "max_drop": 0.02, "max_iterations": 8, "device": "cpu"}
    sequential = osl.compress(model, "digits:val", "lamp", piece, eval_data="digits:test", **settings)
    parallel = osl.compress(model, "digits:val", "lamp", piece, eval_data="digits:test", ray="local", **settings)
    assert parallel.to_json() == sequential.to_json() and len(sequential.history) >= 3
    assert all(np.array_equal(a.float_data, b.float_data) and a.raw_data == b.raw_data
               for a, b in zip(parallel.model.graph.initializer, sequential.model.graph.initializer, strict=True))


def test_profile_command_with_ray_writes_the_profile_of_one_process(tmp_path):
    """Oracle: ``osl.profile`` in this process; the command is run in this process, which is already connected to
    Ray (as a user's script may be), so ``--ray`` uses that connection."""
    out = tmp_path / "profile.npz"
    result = CliRunner().invoke(cli, ["profile", str(MLP), "--data", "digits:val", "--metric", "taylor",
                                      "--max-per-class", "10", "--ray", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["output"] == str(out)
    assert_same_profile(Profile.load(out), in_one_process(MLP, "digits:val", ["taylor"], max_per_class=10))


def test_without_ray_installed_the_option_is_one_line_and_exit_2(tmp_path):
    """Oracle: the exit code and stderr of the command in a fresh interpreter where ``import ray`` fails."""
    code = ("import sys; sys.modules['ray'] = None\nfrom onnxslice_cli.main import cli\n"
            f"cli(['profile', {str(MLP)!r}, '--data', 'digits:val', '--ray', '-o', {str(tmp_path / 'p.npz')!r}])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "onnxslice: error: --ray: Ray is not installed; install it with pip install onnxslice[ray]"]
    assert not (tmp_path / "p.npz").exists()
