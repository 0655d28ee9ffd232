"""MNIST from verified files, and the permuted, split and rotated task builders; see lessons 00 and 02."""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import sys
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from . import assets, config

# The derived file: MNIST as raw uint8 bytes, train images, train labels, test images, test labels.
MNIST_U8_FILE = "mnist-uint8.bin"
MNIST_U8_SHA256 = "06b0d1f124c4e5fa796686ade41a9b778edacc8622f2195a352ef479ad44fc16"
N_TRAIN, N_TEST, N_PIXELS = 60_000, 10_000, 784


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for something other than numpy arrays."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and refuses every other global."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5 pickles of arrays
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # how Python 3 pickles the bytes inside an array at protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise UnsafePickleError(f"refusing to load {module}.{name} from a pickle: only numpy arrays are allowed")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]  # NumPy 2 moved numpy.core
        return super().find_class(module, name)


def load_numpy_pickle(data: bytes | io.BufferedIOBase):
    """Unpickle bytes or a file that may hold only numpy arrays (and tuples, lists, numbers of them)."""
    f = io.BytesIO(data) if isinstance(data, bytes) else data
    return NumpyOnlyUnpickler(f, encoding="latin1").load()


@dataclass
class MNIST:
    """The 60,000/10,000 MNIST split as uint8 images (N, 28, 28) and int64 labels (N,)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def _pickle_to_u8(path: Path) -> bytes:
    """Convert the 50k/10k/10k float pickle (pixel/256) to our raw uint8 layout."""
    with gzip.open(path, "rb") as f:
        (xtr, ytr), (xva, yva), (xte, yte) = load_numpy_pickle(f)
    parts = []
    for x, y in ((np.concatenate([xtr, xva]), np.concatenate([ytr, yva])), (xte, yte)):
        pixels = np.rint(x * 256.0)
        if pixels.min() < 0 or pixels.max() > 255:
            raise assets.AssetError("MNIST pickle holds pixel values outside 0..255/256")
        parts += [pixels.astype(np.uint8).tobytes(), y.astype(np.uint8).tobytes()]
    return b"".join(parts)


def _u8_to_mnist(raw: bytes) -> MNIST:
    buf = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    sizes = [N_TRAIN * N_PIXELS, N_TRAIN, N_TEST * N_PIXELS, N_TEST]
    xtr, ytr, xte, yte = torch.split(buf, sizes)
    return MNIST(xtr.view(N_TRAIN, 28, 28), ytr.long(), xte.view(N_TEST, 28, 28), yte.long())


def _mnist_u8_bytes() -> bytes:
    """The raw uint8 MNIST bytes, from the derived cache file or rebuilt from the pinned pickle."""
    derived = config.data_dir() / MNIST_U8_FILE
    if derived.is_file():
        raw = derived.read_bytes()
        if hashlib.sha256(raw).hexdigest() == MNIST_U8_SHA256:
            return raw
        derived.unlink()  # corrupt or tampered: rebuild it from the verified source
    raw = _pickle_to_u8(assets.ensure("mnist"))
    got = hashlib.sha256(raw).hexdigest()
    if got != MNIST_U8_SHA256:
        raise assets.AssetError(f"converted MNIST has sha256 {got}, expected {MNIST_U8_SHA256}")
    try:
        assets.write_atomic(derived, raw)
    except OSError as e:  # a read-only shared cache: use the data, just do not keep the fast copy
        print(f"cfcourse: could not save {derived} ({e}); MNIST will load more slowly next time", file=sys.stderr)
    return raw


@lru_cache(maxsize=1)
def _load_mnist_cached(data_dir: str) -> MNIST:
    return _u8_to_mnist(_mnist_u8_bytes())


def load_mnist() -> MNIST:
    """The real MNIST split (60,000 train, 10,000 test) as uint8 tensors; see lesson 00."""
    return _load_mnist_cached(str(config.data_dir()))


@dataclass
class Task:
    """One task of a sequence: inputs (the lessons': flat uint8 images (N, 784); yours: any float tensors, see
    task_from_dataset), int64 targets (N,), and which head it uses."""

    name: str
    task_id: int
    train_x: torch.Tensor  # (N, 784) uint8 for the lessons; (N, ...) floats for your own data
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor  # (M, ...) like train_x
    test_y: torch.Tensor  # (M,) int64
    classes: tuple[int, ...]  # the digits in this task
    meta: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"Task({self.name!r}, task_id={self.task_id}, train={len(self.train_y)}, "
                f"test={len(self.test_y)}, classes={self.classes})")


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float in [0, 1], done per batch so the data stays uint8 in memory."""
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 pixels (0-255), got {x.dtype}; keep task images as uint8 tensors")
    return x.float().div_(255.0)


def to_inputs(x: torch.Tensor) -> torch.Tensor:
    """A batch as model inputs: uint8 pixels become floats in [0, 1] (to_float), any other tensor passes as is."""
    return to_float(x) if x.dtype == torch.uint8 else x


def _materialise(data, argument: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) stacked from a Dataset of (input, label) pairs or a DataLoader of batches: one pass, once."""
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, DataLoader):
        batches = list(data)
    elif isinstance(data, Dataset):
        try:
            n = len(data)
        except TypeError:
            raise TypeError(f"{argument} must have a length (a map-style Dataset) or be a DataLoader") from None
        batches = list(DataLoader(data, batch_size=max(1, min(n, 1024))))
    else:
        raise TypeError(f"{argument} must be a torch.utils.data.Dataset or DataLoader of (input, label) pairs, "
                        f"got {type(data).__name__}")
    if not batches:
        raise ValueError(f"{argument} is empty: it must hold at least one (input, label) pair")
    if not all(isinstance(b, (list, tuple)) and len(b) == 2 for b in batches):
        raise ValueError(f"{argument} must give (input, label) pairs")
    x, y = torch.cat([torch.as_tensor(b[0]) for b in batches]), torch.cat([torch.as_tensor(b[1]) for b in batches])
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.ndim != 1:
        raise ValueError(f"{argument}'s labels must be whole numbers, one per input; got {y.dtype} of shape "
                         f"{tuple(y.shape)}")
    if int(y.min()) < 0:
        raise ValueError(f"{argument}'s labels must be class indices 0, 1, 2, ...; got {int(y.min())}")
    return x, y.long()


def task_from_dataset(train, test, name: str = "task", task_id: int = 0) -> Task:
    """A task from your own data: `train` and `test` are torch Datasets of (input, label) pairs (or DataLoaders),
    inputs float tensors of any shape (uint8 images are scaled to [0, 1] a batch at a time) and labels class
    indices. The data is held in memory, so every strategy and the runner work on it as on the lessons' MNIST."""
    train_x, train_y = _materialise(train, "train")
    test_x, test_y = _materialise(test, "test")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(f"train and test inputs must have one shape, got {tuple(train_x.shape[1:])} and "
                         f"{tuple(test_x.shape[1:])}")
    classes = tuple(sorted(set(train_y.tolist())))
    return Task(name, task_id, train_x, train_y, test_x, test_y, classes, {"source": "dataset"})


def _subsample(x: torch.Tensor, y: torch.Tensor, n: int | None, gen: torch.Generator):
    if n is None or n >= len(y):
        return x, y
    idx = torch.randperm(len(y), generator=gen)[:n]
    return x[idx], y[idx]


def _check_count(n_tasks: int, most: int | None = None) -> None:
    if not isinstance(n_tasks, int) or n_tasks < 1:
        raise ValueError(f"n_tasks must be a positive integer, got {n_tasks!r}")
    if most is not None and n_tasks > most:
        raise ValueError(f"n_tasks must be at most {most} here, got {n_tasks}")


def _base(train_size, test_size, seed):
    """MNIST flattened to (N, 784), optionally subsampled by a seeded generator."""
    for label, n in (("train_size", train_size), ("test_size", test_size)):
        if n is not None and (not isinstance(n, int) or n < 1):
            raise ValueError(f"{label} must be a positive integer or None, got {n!r}")
    mnist = load_mnist()
    gen_train, gen_test = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    xtr, ytr = _subsample(mnist.train_images.reshape(-1, N_PIXELS), mnist.train_labels, train_size, gen_train)
    xte, yte = _subsample(mnist.test_images.reshape(-1, N_PIXELS), mnist.test_labels, test_size, gen_test)
    return xtr, ytr, xte, yte


def make_permutations(n_tasks: int, seed: int = 0, identity_first: bool = True) -> torch.Tensor:
    """Pixel permutations (n_tasks, 784) fixed by `seed`; task 0 keeps the original digits by default."""
    _check_count(n_tasks)
    gen = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(N_PIXELS, generator=gen) for _ in range(n_tasks)])
    if identity_first:
        perms[0] = torch.arange(N_PIXELS)
    return perms


SCENARIOS = ("task", "domain", "class")


def _check_scenario(scenario: str) -> None:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")


def as_scenario(tasks: list[Task], scenario: str) -> list[Task]:
    """Ten-digit tasks (permuted, rotated) in a scenario; see lesson 03. domain: the same ten labels for every
    task (one 10-way head); task: the same labels, one head per task chosen by the task id; class: task t's
    digits become classes 10t..10t+9, so one 10T-way head must tell every task's digits apart."""
    _check_scenario(scenario)
    if scenario != "class":
        return [replace(t, meta={**t.meta, "scenario": scenario}) for t in tasks]
    return [replace(t, train_y=t.train_y + 10 * t.task_id, test_y=t.test_y + 10 * t.task_id,
                    classes=tuple(c + 10 * t.task_id for c in t.classes), meta={**t.meta, "scenario": scenario})
            for t in tasks]


def permuted_mnist(n_tasks: int = 5, seed: int = 0, train_size: int | None = None,
                   test_size: int | None = None, scenario: str = "domain") -> list[Task]:
    """Permuted MNIST: each task is all ten digits under its own fixed pixel permutation; see lesson 02."""
    _check_count(n_tasks)
    _check_scenario(scenario)
    xtr, ytr, xte, yte = _base(train_size, test_size, seed)
    perms = make_permutations(n_tasks, seed)
    identity = torch.arange(N_PIXELS)

    def permute(x, p):  # the identity shares memory with MNIST itself; other permutations are copies
        return x if torch.equal(p, identity) else x[:, p]
    return as_scenario([Task(f"permutation {t}", t, permute(xtr, p), ytr, permute(xte, p), yte, tuple(range(10)),
                             {"perm": p}) for t, p in enumerate(perms)], scenario)


SPLIT_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))


def split_mnist(n_tasks: int = 5, scenario: str = "class", seed: int = 0, train_size: int | None = None,
                test_size: int | None = None) -> list[Task]:
    """Split MNIST: task t holds digits 2t and 2t+1; targets are the digits (class-IL) or 0/1 (task-, domain-IL)."""
    _check_count(n_tasks, most=len(SPLIT_PAIRS))
    _check_scenario(scenario)
    xtr, ytr, xte, yte = _base(train_size, test_size, seed)
    tasks = []
    for t, pair in enumerate(SPLIT_PAIRS[:n_tasks]):
        tr = (ytr == pair[0]) | (ytr == pair[1])
        te = (yte == pair[0]) | (yte == pair[1])
        def target(y): return y if scenario == "class" else (y == pair[1]).long()
        tasks.append(Task(f"digits {pair[0]}/{pair[1]}", t, xtr[tr], target(ytr[tr]), xte[te], target(yte[te]),
                          pair, {"scenario": scenario}))
    return tasks


def rotate_images(x: torch.Tensor, degrees: float, chunk: int = 10_000) -> torch.Tensor:
    """Rotate flat uint8 images (N, 784) by `degrees` about their centre (bilinear), in chunks."""
    from torchvision.transforms.functional import InterpolationMode, rotate
    out = torch.empty_like(x)
    for i in range(0, len(x), chunk):
        img = x[i:i + chunk].view(-1, 1, 28, 28)
        out[i:i + chunk] = rotate(img, float(degrees), InterpolationMode.BILINEAR).reshape(-1, N_PIXELS)
    return out


def rotated_mnist(n_tasks: int = 5, max_degrees: float = 180.0, seed: int = 0, train_size: int | None = None,
                  test_size: int | None = None, scenario: str = "domain") -> list[Task]:
    """Rotated MNIST: task t shows every digit turned by t * max_degrees / n_tasks degrees."""
    _check_count(n_tasks)
    _check_scenario(scenario)
    xtr, ytr, xte, yte = _base(train_size, test_size, seed)
    tasks = []
    for t in range(n_tasks):
        deg = t * max_degrees / n_tasks
        tasks.append(Task(f"rotated {deg:.0f} deg", t, rotate_images(xtr, deg), ytr, rotate_images(xte, deg), yte,
                          tuple(range(10)), {"degrees": deg}))
    return as_scenario(tasks, scenario)


BUILDERS = {"permuted-mnist": permuted_mnist, "split-mnist": split_mnist, "rotated-mnist": rotated_mnist}
