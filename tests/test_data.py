"""MNIST loading (real data), the restricted unpickler, and the permuted, split and rotated task builders."""
from __future__ import annotations

import builtins
import gzip
import hashlib
import io
import os
import pickle

import numpy as np
import pytest
import torch

from cfcourse import data

# --- the restricted unpickler ---------------------------------------------------------------------


def _mnist_like():
    rng = np.random.default_rng(0)
    split = lambda n: (rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64))  # noqa: E731
    return split(5), split(3), split(2)


@pytest.mark.parametrize("protocol", [3, 4])
def test_unpickler_loads_tuples_of_numpy_arrays(protocol):
    want = _mnist_like()
    got = data.load_numpy_pickle(pickle.dumps(want, protocol=protocol))
    assert isinstance(got, tuple) and len(got) == 3
    for (gx, gy), (wx, wy) in zip(got, want):
        assert gx.dtype == np.float32 and gy.dtype == np.int64
        np.testing.assert_array_equal(gx, wx)
        np.testing.assert_array_equal(gy, wy)


@pytest.mark.parametrize("protocol", [2, 5])
def test_unpickler_loads_numpy_arrays_at_every_protocol(protocol):
    """Protocol 2 pickles an array's bytes via _codecs.encode; protocol 5 (Python 3.14's default, and
    pickle.HIGHEST_PROTOCOL) rebuilds arrays via numpy._core.numeric._frombuffer.

    Known bug (reported): NumpyOnlyUnpickler.ALLOWED lacks _frombuffer, so protocol-5 numpy-only pickles are refused.
    """
    want = (np.arange(12, dtype=np.float32).reshape(3, 4), np.array([1, 2, 3], dtype=np.int64))
    got = data.load_numpy_pickle(pickle.dumps(want, protocol=protocol))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_unpickler_reads_a_file_object_too():
    want = [np.ones((2, 2)), np.zeros(3, dtype=np.uint8)]
    got = data.load_numpy_pickle(io.BytesIO(pickle.dumps(want, protocol=4)))
    assert isinstance(got, list) and got[1].dtype == np.uint8
    np.testing.assert_array_equal(got[0], want[0])


def test_unpickler_reads_the_real_mnist_pickle(mnist_pkl):
    with gzip.open(mnist_pkl, "rb") as f:
        (xtr, ytr), (xva, yva), (xte, yte) = data.load_numpy_pickle(f)
    assert xtr.shape == (50_000, 784) and xva.shape == (10_000, 784) and xte.shape == (10_000, 784)
    assert xtr.dtype == np.float32 and 0.0 <= xtr.min() and xtr.max() < 1.0
    assert list(ytr[:5]) == [5, 0, 4, 1, 9] and list(yte[:5]) == [7, 2, 1, 0, 4]


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _RunsEval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.eval, (f"open({str(self.marker)!r}, 'w').close()",)


@pytest.mark.parametrize("payload", [_RunsShell, _RunsEval], ids=["os.system", "builtins.eval"])
def test_unpickler_refuses_code_without_running_it(payload, tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps((np.zeros(3), payload(marker)), protocol=4)
    with pytest.raises(data.UnsafePickleError, match="only numpy arrays are allowed"):
        data.load_numpy_pickle(evil)
    assert not marker.exists(), "the refused pickle must not have run anything"
    assert issubclass(data.UnsafePickleError, pickle.UnpicklingError)


def test_the_evil_pickle_really_is_evil(tmp_path):
    """Control for the test above: the plain unpickler does run the payload."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_RunsEval(marker)))
    assert marker.exists()


def test_unpickler_refuses_other_globals():
    with pytest.raises(data.UnsafePickleError, match="collections.OrderedDict"):
        data.load_numpy_pickle(pickle.dumps(__import__("collections").OrderedDict(a=1)))


# --- load_mnist on the real data ------------------------------------------------------------------


def test_load_mnist_sizes_shapes_dtypes(mnist):
    assert mnist.train_images.shape == (60_000, 28, 28) and mnist.test_images.shape == (10_000, 28, 28)
    assert mnist.train_images.dtype == torch.uint8 and mnist.test_images.dtype == torch.uint8
    assert mnist.train_labels.shape == (60_000,) and mnist.test_labels.shape == (10_000,)
    assert mnist.train_labels.dtype == torch.int64
    assert int(mnist.train_images.max()) == 255 and int(mnist.train_images.min()) == 0


def test_load_mnist_labels(mnist):
    assert mnist.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist.test_labels[:5].tolist() == [7, 2, 1, 0, 4]
    for labels in (mnist.train_labels, mnist.test_labels):
        assert set(labels.unique().tolist()) == set(range(10))
        share = torch.bincount(labels, minlength=10).float() / len(labels)
        assert share.min() > 0.085 and share.max() < 0.115, share


def test_load_mnist_digits_look_like_digits(mnist):
    """Real MNIST: mostly dark border, inked centre; a '1' has less ink than a '0'."""
    x = mnist.train_images.float()
    assert x[:, :2, :].mean() < 1.0 and x[:, 10:18, 10:18].mean() > 60
    ones, zeros = x[mnist.train_labels == 1].mean(), x[mnist.train_labels == 0].mean()
    assert ones < 0.6 * zeros


def test_load_mnist_is_cached_in_memory(mnist):
    first = data.load_mnist()
    assert data.load_mnist() is first


def test_derived_file_is_built_then_a_corrupt_one_rebuilt(mnist_data_dir, mnist):
    derived = mnist_data_dir / data.MNIST_U8_FILE
    derived.write_bytes(b"\0" * 1000)  # corrupt or truncated derived file

    got = data.load_mnist()

    assert hashlib.sha256(derived.read_bytes()).hexdigest() == data.MNIST_U8_SHA256
    assert torch.equal(got.train_labels, mnist.train_labels)
    assert torch.equal(got.test_images, mnist.test_images)
    assert sorted(p.name for p in mnist_data_dir.iterdir()) == sorted(["mnist.pkl.gz", data.MNIST_U8_FILE])


def test_derived_file_is_used_when_valid(mnist_data_dir, course_data, monkeypatch):
    (mnist_data_dir / data.MNIST_U8_FILE).write_bytes((course_data / data.MNIST_U8_FILE).read_bytes())

    def no_rebuild(*a, **k):
        raise AssertionError("a valid derived file must be used as is")
    monkeypatch.setattr(data, "_pickle_to_u8", no_rebuild)
    assert data.load_mnist().train_labels[:3].tolist() == [5, 0, 4]


def test_to_float_never_changes_its_input():
    """Known bug (reported): for a float tensor `.float()` returns the same tensor and `div_` then divides the
    caller's data by 255 in place (evaluate passes views of task.test_x, so a float task is silently rescaled
    at every evaluation). It should either refuse non-uint8 input or leave it alone."""
    x = torch.full((2, 3), 255.0)
    try:
        data.to_float(x)
    except (TypeError, ValueError):
        pass
    assert torch.equal(x, torch.full((2, 3), 255.0))


def test_to_float_range_and_type():
    x = torch.tensor([[0, 51, 255]], dtype=torch.uint8)
    y = data.to_float(x)
    assert y.dtype == torch.float32 and x.dtype == torch.uint8
    assert torch.allclose(y, torch.tensor([[0.0, 0.2, 1.0]]))


# --- permuted MNIST -------------------------------------------------------------------------------

SMALL = dict(train_size=600, test_size=200)


def test_make_permutations_are_true_and_seeded():
    a, b, c = data.make_permutations(4, seed=0), data.make_permutations(4, seed=0), data.make_permutations(4, seed=1)
    assert a.shape == (4, 784)
    assert torch.equal(a, b)
    assert not torch.equal(a[1:], c[1:])
    assert torch.equal(a[0], torch.arange(784))
    for p in a:
        assert torch.equal(p.sort().values, torch.arange(784))
    assert not torch.equal(data.make_permutations(2, identity_first=False)[0], torch.arange(784))


def test_permuted_mnist_tasks(mnist):
    tasks = data.permuted_mnist(3, seed=0, **SMALL)
    again = data.permuted_mnist(3, seed=0, **SMALL)
    other = data.permuted_mnist(3, seed=1, **SMALL)
    assert len(tasks) == 3 and [t.task_id for t in tasks] == [0, 1, 2]
    base_x = tasks[0].train_x
    assert base_x.shape == (600, 784) and base_x.dtype == torch.uint8 and tasks[0].test_x.shape == (200, 784)
    assert torch.equal(tasks[0].meta["perm"], torch.arange(784))
    for t, t2, t3 in zip(tasks, again, other):
        perm = t.meta["perm"]
        assert torch.equal(perm.sort().values, torch.arange(784))
        assert torch.equal(perm, t2.meta["perm"]) and torch.equal(t.train_x, t2.train_x)
        assert torch.equal(t.train_x, base_x[:, perm])  # the same digits, pixels moved
        assert torch.equal(t.train_y, tasks[0].train_y) and t.classes == tuple(range(10))
    assert not torch.equal(tasks[1].meta["perm"], other[1].meta["perm"])
    # task 0 is real, unpermuted MNIST: every sampled row is a row of the training set
    rows = {bytes(r.numpy()) for r in mnist.train_images.reshape(-1, 784)}
    assert all(bytes(r.numpy()) in rows for r in base_x[:20])


def test_permuted_mnist_full_size(mnist):
    tasks = data.permuted_mnist(2)
    assert len(tasks[1].train_y) == 60_000 and len(tasks[1].test_y) == 10_000
    assert torch.equal(tasks[0].train_x, mnist.train_images.reshape(-1, 784))


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_tasks=0), "n_tasks must be a positive integer, got 0"),
    (dict(n_tasks=-2), "n_tasks"),
    (dict(n_tasks=2.5), "n_tasks"),
    (dict(n_tasks=2, train_size=0), "train_size must be a positive integer"),
    (dict(n_tasks=2, test_size=-5), "test_size must be a positive integer"),
])
def test_permuted_mnist_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.permuted_mnist(**kwargs)


# --- split MNIST ----------------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", data.SCENARIOS)
def test_split_mnist_pairs_and_targets(scenario):
    tasks = data.split_mnist(5, scenario, seed=0, train_size=3000, test_size=1000)
    digits = data.split_mnist(5, "class", seed=0, train_size=3000, test_size=1000)
    assert [t.classes for t in tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert sum(len(t.train_y) for t in tasks) == 3000 and sum(len(t.test_y) for t in tasks) == 1000
    for t, d in zip(tasks, digits):
        assert set(d.train_y.unique().tolist()) == set(t.classes)  # real digits of the pair only
        assert torch.equal(t.train_x, d.train_x)
        if scenario == "class":
            assert torch.equal(t.train_y, d.train_y)
        else:
            assert torch.equal(t.train_y, (d.train_y == t.classes[1]).long())
            assert torch.equal(t.test_y, (d.test_y == t.classes[1]).long())
            assert set(t.train_y.unique().tolist()) == {0, 1}
        assert t.meta["scenario"] == scenario


def test_split_mnist_fewer_tasks_and_full_size(mnist):
    tasks = data.split_mnist(2, "task")
    assert [t.classes for t in tasks] == [(0, 1), (2, 3)]
    n01 = int(((mnist.train_labels == 0) | (mnist.train_labels == 1)).sum())
    assert len(tasks[0].train_y) == n01


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_tasks=6), "at most 5"),
    (dict(n_tasks=0), "positive integer"),
    (dict(n_tasks=2, scenario="incremental"), "unknown scenario 'incremental'; choose one of task, domain, class"),
    (dict(n_tasks=2, train_size=0), "train_size"),
])
def test_split_mnist_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.split_mnist(**kwargs)


# --- rotated MNIST --------------------------------------------------------------------------------

def test_rotated_mnist_tasks():
    tasks = data.rotated_mnist(3, seed=0, **SMALL)
    base = data.permuted_mnist(1, seed=0, **SMALL)[0]
    assert [t.meta["degrees"] for t in tasks] == [0.0, 60.0, 120.0]
    assert torch.equal(tasks[0].train_x, base.train_x) and torch.equal(tasks[0].test_x, base.test_x)
    for t in tasks[1:]:
        assert t.train_x.dtype == torch.uint8 and t.train_x.shape == base.train_x.shape
        assert not torch.equal(t.train_x, base.train_x)
        assert torch.equal(t.train_y, base.train_y)
        # a rotation moves ink, it does not add much: total ink stays within a few percent
        ratio = t.train_x.float().sum() / base.train_x.float().sum()
        assert 0.9 < ratio < 1.05


def test_rotate_images_by_90_degrees_is_an_exact_quarter_turn(mnist):
    x = mnist.test_images[:50].reshape(-1, 784)
    turned = data.rotate_images(x, 90, chunk=16).view(-1, 28, 28)  # chunking must not matter
    assert torch.equal(turned, torch.rot90(mnist.test_images[:50], 1, (1, 2)))  # counter-clockwise


def test_rotated_mnist_bad_input():
    with pytest.raises(ValueError, match="n_tasks"):
        data.rotated_mnist(0)


def test_task_repr_and_builders():
    t = data.permuted_mnist(1, **SMALL)[0]
    assert repr(t) == "Task('permutation 0', task_id=0, train=600, test=200, classes=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9))"
    assert set(data.BUILDERS) == {"permuted-mnist", "split-mnist", "rotated-mnist"}


def test_ten_digit_scenarios_keep_images_and_shift_labels_only_in_class_il():
    domain = data.permuted_mnist(3, train_size=600, test_size=200)
    task_il = data.permuted_mnist(3, train_size=600, test_size=200, scenario="task")
    class_il = data.permuted_mnist(3, train_size=600, test_size=200, scenario="class")
    for d, t, c in zip(domain, task_il, class_il):
        assert torch.equal(d.train_x, c.train_x) and torch.equal(d.train_y, t.train_y)
        assert torch.equal(c.train_y, d.train_y + 10 * d.task_id) and torch.equal(c.test_y, d.test_y + 10 * d.task_id)
        assert c.classes == tuple(range(10 * d.task_id, 10 * d.task_id + 10))
        assert (d.meta["scenario"], t.meta["scenario"], c.meta["scenario"]) == ("domain", "task", "class")
    with pytest.raises(ValueError, match="unknown scenario 'online'; choose one of task, domain, class"):
        data.rotated_mnist(2, scenario="online")
