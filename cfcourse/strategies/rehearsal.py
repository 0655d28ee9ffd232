"""Replay (reservoir and class-balanced buffers), GEM and A-GEM; see lesson 05.

All three keep an episodic memory of past samples as uint8 images with
their labels and task ids. The memory is filled after each task from that
task's training data, so while task t trains it holds tasks 0..t-1 only, and
the first task trains exactly as naive fine-tuning does. Replay mixes
remembered samples into each batch; GEM (Lopez-Paz & Ranzato 2017) and A-GEM
(Chaudhry et al. 2019) use them to correct the direction of each gradient
step: GEM with one constraint per earlier task, A-GEM with one for all.
"""
from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Task, to_inputs
from ..models import forward, model_device
from . import HParam, Strategy, register

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x (n, ...), labels (n,), task ids (n,)


def reservoir_update(buffer: list, item, seen: int, rng: random.Random, size: int | None = None) -> None:
    """Reservoir sampling; see lesson 05.

    Offer the `seen`-th item of a stream (counting from 1) to `buffer`, so that each of the `seen` items is
    held with the same probability, size/seen. The capacity is `size`, or len(buffer) for a preallocated list.
    """
    size = len(buffer) if size is None else size
    if len(buffer) < size:  # a growing list that is not full yet
        buffer.append(item)
    elif seen <= size:  # a preallocated list that is not full yet
        buffer[seen - 1] = item
    else:
        j = rng.randrange(seen)  # keep the new item with probability size/seen ...
        if j < size:
            buffer[j] = item  # ... in place of a random one of those held


def _default_generator() -> torch.Generator:
    """A generator seeded from torch's seed (cfcourse.set_seed), without drawing from the global stream."""
    return torch.Generator().manual_seed(torch.initial_seed())


def _as_ids(task_ids: int | torch.Tensor, n: int) -> torch.Tensor:
    """Task ids as an int64 tensor (n,) on the CPU, from one int for the batch or one id per sample."""
    if isinstance(task_ids, torch.Tensor):
        if task_ids.shape != (n,):
            raise ValueError(f"task_ids must be an int or a tensor of shape ({n},), got shape {tuple(task_ids.shape)}")
        return task_ids.long().cpu()
    return torch.full((n,), int(task_ids), dtype=torch.long)


class _Memory:
    """Storage shared by the buffers: preallocated tensors x (size, ...), y (size,), task_ids (size,)."""

    def __init__(self, size: int, generator: torch.Generator | None = None):
        if isinstance(size, bool) or not isinstance(size, int):
            raise ValueError(f"buffer_size must be an integer >= 0, got {size!r}")
        if size < 0:
            raise ValueError(f"buffer_size must be >= 0, got {size}")
        self.size, self.generator = size, generator or _default_generator()
        self.device = torch.device("cpu")
        self.x: torch.Tensor | None = None  # allocated at the first add, when the input shape is known
        self.y = torch.zeros(size, dtype=torch.long)
        self.task_ids = torch.zeros(size, dtype=torch.long)
        self.n = 0  # slots in use: always the first n
        self.seen = 0  # items offered so far

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, held={self.n}, seen={self.seen})"

    def to(self, device: torch.device | str) -> _Memory:
        """Keep the memory on `device` (the model's), so that sampling needs no copies."""
        self.device = torch.device(device)
        self.y, self.task_ids = self.y.to(self.device), self.task_ids.to(self.device)
        self.x = self.x.to(self.device) if self.x is not None else None
        return self

    def contents(self) -> Batch:
        """Everything held: x (n, ...), y (n,), task ids (n,)."""
        if self.x is None:
            return torch.empty(0, dtype=torch.uint8), self.y[:0], self.task_ids[:0]
        return self.x[: self.n], self.y[: self.n], self.task_ids[: self.n]

    def sample(self, n: int, generator: torch.Generator | None = None, replace: bool = False) -> Batch:
        """A random batch of n held samples: without replacement when n <= len(self) (unless `replace`), else
        with it."""
        if self.n == 0:
            raise ValueError("the buffer is empty: add samples (e.g. after a task) before sampling from it")
        gen = generator or self.generator
        if n <= self.n and not replace:
            idx = torch.randperm(self.n, generator=gen)[:n]
        else:
            idx = torch.randint(self.n, (n,), generator=gen)
        idx = idx.to(self.device)
        return self.x[idx], self.y[idx], self.task_ids[idx]

    def _check_batch(self, x: torch.Tensor, y: torch.Tensor) -> int:
        """The batch's length, once it is known to match what is held (storage is allocated at the first)."""
        if len(x) != len(y):
            raise ValueError(f"x and y must hold the same number of samples, got {len(x)} and {len(y)}")
        if self.x is None:
            self.x = torch.empty((self.size, *x.shape[1:]), dtype=x.dtype, device=self.device)
        elif (x.shape[1:] != self.x.shape[1:] or x.dtype != self.x.dtype):
            raise ValueError(f"samples must look like those already held: {self.x.dtype} {tuple(self.x.shape[1:])}, "
                             f"got {x.dtype} {tuple(x.shape[1:])}")
        return len(y)

    def _write(self, slots: torch.Tensor, x: torch.Tensor, y: torch.Tensor, ids: torch.Tensor,
               src: torch.Tensor) -> None:
        """Put samples src of (x, y, ids) into memory slots `slots`."""
        dev, slots = self.device, slots.to(self.device)
        self.x[slots] = x[src.to(x.device)].to(dev)
        self.y[slots] = y[src.to(y.device)].to(dev)
        self.task_ids[slots] = ids[src].to(dev)


class ReservoirBuffer(_Memory):
    """Fixed-size memory filled by reservoir sampling (Vitter's algorithm R): a uniform sample of the stream."""

    def add(self, x: torch.Tensor, y: torch.Tensor, task_ids: int | torch.Tensor) -> None:
        """Offer a batch in order; after n items in all, each is held with probability size/n."""
        n = self._check_batch(x, y)
        ids = _as_ids(task_ids, n)
        pos = torch.arange(self.seen, self.seen + n)  # (n,) stream positions, from 0
        self.seen += n
        if self.size == 0:
            return
        draw = (torch.rand(n, generator=self.generator, dtype=torch.float64) * (pos + 1)).long().minimum(pos)
        slot = torch.where(pos < self.size, pos, draw)  # (n,) fill in order, then a slot in 0..pos
        keep = slot < self.size
        # when two items of the batch land in one slot the later one wins, as item by item
        last = torch.full((self.size,), -1).scatter_reduce_(0, slot[keep], torch.arange(n)[keep], "amax")
        slots = (last >= 0).nonzero().squeeze(1)  # (k,) slots written
        self._write(slots, x, y, ids, last[slots])
        self.n = min(self.seen, self.size)


def balanced_quota(counts: torch.Tensor, size: int) -> torch.Tensor:
    """Slots per class (classes,): an equal share (±1) of `size`, less for a class with fewer samples to give."""
    quota = torch.zeros_like(counts)
    left, order = size, counts.argsort().tolist()
    for i, c in enumerate(order):  # smallest classes first: what they cannot use goes to the rest
        quota[c] = min(int(counts[c]), left // (len(order) - i))
        left -= int(quota[c])
    return quota


class ClassBalancedBuffer(_Memory):
    """Memory with an equal share for each class seen so far; a new class takes slots from the largest ones.

    A class is a label within a task, so in class-incremental split MNIST it is a digit, and in permuted
    MNIST each task's digits are classes of their own. Each sample gets a random priority when offered and
    each class keeps its lowest-priority samples: a uniform sample of that class, however often it shrinks.
    """

    def __init__(self, size: int, generator: torch.Generator | None = None):
        super().__init__(size, generator)
        self.priority = torch.zeros(size, dtype=torch.float64)

    def add(self, x: torch.Tensor, y: torch.Tensor, task_ids: int | torch.Tensor) -> None:
        """Offer a batch: rebalance over all classes held or offered, dropping at random within each."""
        n = self._check_batch(x, y)
        ids = _as_ids(task_ids, n)
        self.seen += n
        if self.size == 0:
            return
        k = self.n
        pool_y = torch.cat([self.y[:k].cpu(), y.cpu()])  # (k + n,) held first, then offered
        pool_ids = torch.cat([self.task_ids[:k].cpu(), ids])
        pool_priority = torch.cat([self.priority[:k], torch.rand(n, generator=self.generator, dtype=torch.float64)])
        _, cls, counts = torch.unique(self._groups(pool_ids, pool_y), dim=1, return_inverse=True,
                                      return_counts=True)  # (k + n,) class of each, (classes,) sizes
        keep = self._lowest_priority(cls, counts, pool_priority, balanced_quota(counts, self.size))
        old, new = keep[keep < k], keep[keep >= k] - k  # (h,) held samples kept, (m,) offered ones taken
        h, m = len(old), len(new)
        held = old.to(self.device)
        self.x[:h], self.y[:h], self.task_ids[:h] = self.x[held], self.y[held], self.task_ids[held]  # compact
        self.priority[:h] = self.priority[old]
        self._write(torch.arange(h, h + m), x, y, ids, new)
        self.priority[h: h + m] = pool_priority[k + new]
        self.n = h + m

    @staticmethod
    def _groups(ids: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The key (rows, n) that shares memory out: a class is a (task id, label) pair."""
        return torch.stack([ids, y])

    @staticmethod
    def _lowest_priority(cls: torch.Tensor, counts: torch.Tensor, priority: torch.Tensor,
                         quota: torch.Tensor) -> torch.Tensor:
        """Indices (sorted) of the quota[c] lowest-priority samples of each class c."""
        order = priority.argsort()
        order = order[cls[order].argsort(stable=True)]  # grouped by class, lowest priority first
        starts = counts.cumsum(0) - counts  # (classes,) where each class begins in `order`
        rank = torch.arange(len(order)) - starts[cls[order]]  # (k + n,) place within its class
        return order[rank < quota[cls[order]]].sort().values


class TaskBalancedBuffer(ClassBalancedBuffer):
    """Memory with an equal share for each task seen so far, a uniform sample of each: GEM's episodic memory.

    After task t each of the t tasks holds size // t samples (±1), as in Hsu et al.'s GEM; see lesson 05.
    """

    @staticmethod
    def _groups(ids: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ids.unsqueeze(0)  # (1, n): the task id alone


BUFFERS = {"reservoir": ReservoirBuffer, "class-balanced": ClassBalancedBuffer}


def make_buffer(kind: str, size: int, generator: torch.Generator | None = None) -> _Memory:
    """A replay buffer by name: 'reservoir' or 'class-balanced'."""
    if kind not in BUFFERS:
        raise ValueError(f"unknown buffer {kind!r}; choose one of {', '.join(BUFFERS)}")
    return BUFFERS[kind](size, generator)


def replay_count(batch_size: int, replay_ratio: float) -> int:
    """Remembered samples to add to `batch_size` new ones so that they make up `replay_ratio` of the whole."""
    return round(batch_size * replay_ratio / (1.0 - replay_ratio))


_BUFFER_SIZE = HParam("buffer_size", int, 1100, low=0, help="samples kept in memory (0: none)")
_BUFFER = HParam("buffer", str, "reservoir", choices=tuple(BUFFERS),
                 help="how memory is kept: a uniform sample of the stream, or an equal share per class")


def _replay_ratio(default: float, help: str) -> HParam:
    return HParam("replay_ratio", float, default, low=0.0, high=1.0, high_open=True, help=help)


class _Rehearsal(Strategy):
    """Shared by replay, GEM and A-GEM: an episodic memory filled after each task, replayed into each batch at
    `replay_ratio` (0 for the strategies that only project)."""

    replay_ratio = 0.0

    def __init__(self, generator: torch.Generator | None = None, **hparams):
        super().__init__(**hparams)
        self.generator = generator or _default_generator()
        self.memory = self.make_memory()

    def make_memory(self) -> _Memory:
        return make_buffer(self.buffer, self.buffer_size, self.generator)

    def before_task(self, model: nn.Module, task: Task) -> None:
        self.memory.to(model_device(model))

    def after_task(self, model: nn.Module, task: Task) -> None:
        """Offer the whole task's training data to memory (a uniform or class-balanced sample stays)."""
        self.memory.add(task.train_x, task.train_y, task.task_id)


@register
class Replay(_Rehearsal):
    """Experience replay: each batch of new samples is joined by remembered ones from earlier tasks.

    At replay_ratio 0.5 a batch of 128 new samples grows to 256, half of them remembered, so a step of a
    later task costs about twice a naive one; 0.25 adds 43 remembered samples to 128 new ones.
    """

    name = "replay"
    hparams = (_BUFFER_SIZE, _BUFFER,
               _replay_ratio(0.5, "fraction of each combined batch that is replayed, in [0, 1): 0.5 adds one "
                                  "remembered sample per new one"))

    def transform_batch(self, x: torch.Tensor, y: torch.Tensor, task_ids: int | torch.Tensor):
        """Append remembered samples, each with its own label and task id, to the batch."""
        n_replay = replay_count(len(y), self.replay_ratio)
        if n_replay == 0 or len(self.memory) == 0:
            return x, y, task_ids
        x_mem, y_mem, ids_mem = self.memory.sample(n_replay, self.generator)  # (r, 784) uint8, (r,), (r,)
        return replay_batch(x, y, task_ids, x_mem, y_mem, ids_mem)


def replay_schedule(steps: int, batch_size: int, ratio: float) -> list[int]:
    """How many of each step's `batch_size` places are replayed samples, so that the share over the run is
    `ratio`; see lesson 09.

    The counts are spread evenly (step s replays floor((s+1)·b·r) − floor(s·b·r)), so a ratio of 0.25 with
    batches of 2 replays one sample every other step, and over any run the total is steps·batch_size·ratio
    rounded down, never off by more than one.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"replay ratio must be in [0, 1): the share of each batch that is old text, got {ratio}")
    return [_replayed_at(s, batch_size * ratio) for s in range(steps)]


def _replayed_at(step: int, per_step: float) -> int:
    """Step `step`'s count in the even spread of `per_step` replayed samples a step on average."""
    return math.floor((step + 1) * per_step + 1e-9) - math.floor(step * per_step + 1e-9)


@register
class MixedReplay(Replay):
    """Replay that keeps the batch's size: a share `replay_ratio` of every batch's places goes to remembered
    samples, exact over the run (`replay_schedule`); how lesson 09 mixes old text into a language model's
    batches. `schedule` (one count per step) replaces the even spread; `replace` samples memory with
    replacement."""

    name = "mixed-replay"
    hparams = (_BUFFER_SIZE, _BUFFER,
               _replay_ratio(0.25, "share of each batch's places given to remembered samples, in [0, 1), exact "
                                   "over the run"))

    def __init__(self, generator: torch.Generator | None = None, schedule: list[int] | None = None,
                 replace: bool = False, **hparams):
        super().__init__(None, **hparams)  # the memory keeps a generator of its own for what it keeps ...
        self.generator = generator or self.generator  # ... and batches draw from `generator` (e.g. the run's)
        self.schedule = None if schedule is None else [int(n) for n in schedule]
        self.replace = bool(replace)
        self._due = 0  # remembered samples the current batch still needs

    def new_samples(self, step: int, batch_size: int) -> int:
        if self.schedule is not None and step >= len(self.schedule):
            raise ValueError(f"the replay schedule has {len(self.schedule)} steps; step {step} has no count")
        due = (self.schedule[step] if self.schedule is not None
               else _replayed_at(step, batch_size * self.replay_ratio))
        self._due = due if len(self.memory) else 0
        return batch_size - self._due

    def transform_batch(self, x: torch.Tensor, y: torch.Tensor | None, task_ids):
        """Fill the batch's remaining places with remembered samples (labels and task ids too, when it has
        them; a language model's batch is token blocks alone)."""
        if self._due == 0:
            return x, y, task_ids
        x_mem, y_mem, ids_mem = self.memory.sample(self._due, self.generator, self.replace)
        if y is None:
            return torch.cat([x, x_mem.to(x.device)]), None, None
        return replay_batch(x, y, task_ids, x_mem, y_mem, ids_mem)


def replay_batch(x: torch.Tensor, y: torch.Tensor, task_ids: int | torch.Tensor, x_mem: torch.Tensor,
                 y_mem: torch.Tensor, ids_mem: torch.Tensor) -> Batch:
    """The new batch with remembered samples appended, each keeping its own label and task id; see lesson 05.

    x (b, 784) floats in [0, 1]; task_ids one int for the batch or (b,); x_mem (r, 784) as stored (uint8
    pixels become floats in [0, 1]). Returns x (b + r, 784), y (b + r,), task ids (b + r,).
    """
    ids = task_ids if isinstance(task_ids, torch.Tensor) else torch.full_like(y, task_ids)
    x = torch.cat([x, to_inputs(x_mem).to(x.device)])  # (batch + r, 784)
    return x, torch.cat([y, y_mem.to(y.device)]), torch.cat([ids.to(y.device), ids_mem.to(y.device)])


def project_gradient(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """A-GEM: if g points against g_ref (g·g_ref < 0), remove its component along g_ref; see lesson 05."""
    dot = torch.dot(g, g_ref).item()
    if dot >= 0:
        return g
    return g.add(g_ref, alpha=-dot / torch.dot(g_ref, g_ref).item())  # g - (g·g_ref)/(g_ref·g_ref) g_ref


def flat_grad(params: list[nn.Parameter]) -> torch.Tensor:
    """All parameters' gradients as one vector (zeros where a parameter has none)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def set_flat_grad(params: list[nn.Parameter], g: torch.Tensor) -> None:
    """Write one gradient vector back into the parameters' .grad, in the order of flat_grad."""
    offset = 0
    for p in params:
        chunk = g[offset: offset + p.numel()].view_as(p)
        offset += p.numel()
        if p.grad is None:
            p.grad = chunk.clone()
        else:
            p.grad.copy_(chunk)


@register
class AGEM(_Rehearsal):
    """Averaged GEM (Chaudhry et al. 2019): never step against the average gradient on remembered samples."""

    name = "agem"
    hparams = (_BUFFER_SIZE, _BUFFER,
               HParam("agem_batch", int, 128, low=1,
                      help="remembered samples per reference gradient (the paper used 256: slower, no better here)"))

    def __init__(self, generator: torch.Generator | None = None, **hparams):
        super().__init__(generator, **hparams)
        self.steps = 0  # steps taken with a non-empty memory
        self.projections = 0  # of those, steps whose gradient was projected

    def reference_gradient(self, model: nn.Module, params: list[nn.Parameter]) -> torch.Tensor:
        """Gradient of the loss on a memory batch, each sample through its own task's head (flat vector)."""
        x_mem, y_mem, ids_mem = self.memory.sample(min(self.agem_batch, len(self.memory)), self.generator)
        with torch.enable_grad():
            loss = F.cross_entropy(forward(model, to_inputs(x_mem), ids_mem), y_mem)
            # autograd.grad returns the gradients and leaves .grad (the current step's) untouched
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])

    def before_step(self, model: nn.Module) -> None:
        """Project the step's gradient when it would raise the loss on remembered samples."""
        if len(self.memory) == 0:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        self.steps += 1
        self.projections += agem_correct(params, self.reference_gradient(model, params))


def agem_correct(params: list[nn.Parameter], g_ref: torch.Tensor) -> bool:
    """Replace the step's gradient (the params' .grad) by its A-GEM projection on g_ref; True if projected.

    Called after backward and before the optimiser's step; see lesson 05.
    """
    g = flat_grad(params)  # (n_params,)
    g_new = project_gradient(g, g_ref)
    if g_new is g:
        return False
    set_flat_grad(params, g_new)
    return True


# --- GEM: one constraint per earlier task, a small quadratic programme per step --------------------------------

def nonnegative_qp(P: torch.Tensor, c: torch.Tensor, tol: float = 1e-12) -> torch.Tensor:
    """The u >= 0 that minimises 1/2 u'Pu + c'u, for P (t, t) positive definite: an active-set method
    (Lawson & Hanson's, for NNLS), exact in a finite number of steps; see lesson 05.

    `free` holds the coordinates allowed above zero. Each round frees the coordinate whose increase lowers the
    objective most, solves the system on the free ones, and, where that solution leaves the feasible set, steps
    only as far as the boundary and drops the coordinates that reached zero.
    """
    if P.dim() != 2 or P.shape[0] != P.shape[1] or c.shape != (P.shape[0],):
        raise ValueError(f"P must be square (t, t) and c of shape (t,), got {tuple(P.shape)} and {tuple(c.shape)}")
    t = len(c)
    u = torch.zeros(t, dtype=P.dtype, device=P.device)
    free = torch.zeros(t, dtype=torch.bool, device=P.device)
    for _ in range(3 * t + 10):  # Lawson-Hanson needs at most a few rounds per coordinate
        descent = -(P @ u + c)  # (t,) minus the gradient: > 0 where raising u_j lowers the objective
        descent[free] = -torch.inf
        j = int(descent.argmax())
        if descent[j] <= tol:
            break  # KKT conditions hold: optimal
        free[j] = True
        while True:
            s = torch.zeros_like(u)
            s[free] = torch.linalg.solve(P[free][:, free], -c[free])
            if bool((s[free] > tol).all()):
                u = s
                break
            leaving = free & (s <= tol)  # step from u towards s only until the first coordinate reaches 0
            alpha = (u[leaving] / (u[leaving] - s[leaving])).min()
            u = u + alpha * (s - u)
            free &= u > tol
            u[~free] = 0.0
    return u


def project_gem(g: torch.Tensor, G: torch.Tensor, margin: float = 0.0, eps: float = 1e-3) -> torch.Tensor:
    """GEM's projection; see lesson 05. g itself when G g >= 0 (no earlier task's loss would rise); else the step
    direction z closest to g with G z >= 0, so that a small step against z raises none of the earlier tasks'
    losses (row k of G (t, n) is task k's gradient on its memory).

    Solved through the dual, one variable per earlier task: v >= margin minimising 1/2 v'(GG' + eps I)v + g'G'v,
    then z = g + G'v. margin = 0 is the exact projection; a positive margin (GEM's "memory strength", 0.5 in
    the authors' code) pushes z further into the earlier tasks' descent directions, and eps (1e-3, as in their
    code) keeps the system solvable when two tasks' gradients are parallel.
    """
    if G.dim() != 2 or g.shape != (G.shape[1],):
        raise ValueError(f"G must be (tasks, n) and g (n,), got {tuple(G.shape)} and {tuple(g.shape)}")
    if not margin >= 0 or not eps >= 0:
        raise ValueError(f"margin and eps must be >= 0, got {margin!r} and {eps!r}")
    q = G @ g  # (t,) a negative entry: that task's loss would rise
    if bool((q >= 0).all()):
        return g
    P = (G @ G.T).double() + eps * torch.eye(len(G), dtype=torch.float64, device=G.device)  # (t, t)
    v = nonnegative_qp(P, q.double() + margin * P.sum(1)) + margin  # u = v - margin >= 0
    return g + v.to(g.dtype) @ G


@register
class GEM(_Rehearsal):
    """Gradient episodic memory (Lopez-Paz & Ranzato 2017): every step keeps each earlier task's memory loss
    from rising, one constraint per task, by the smallest change to the gradient (a small QP); see lesson 05.

    The memory gives each task seen an equal share of buffer_size (as in Hsu et al.'s GEM). At each step each
    earlier task's gradient is taken on gem_batch of its remembered samples, drawn afresh (GEM used them all:
    at 1,100 samples, nine times the work of a batch of 128; on split MNIST 32 per task gives the same accuracy),
    and the QP runs only when a constraint is broken.
    """

    name = "gem"
    hparams = (_BUFFER_SIZE,
               HParam("gem_batch", int, 32, low=1,
                      help="remembered samples per earlier task for its gradient at each step (all it holds when "
                           "fewer); cost grows with it"),
               HParam("margin", float, 0.5, low=0.0,
                      help="GEM's memory strength: 0 projects exactly onto the constraints, larger values push the "
                           "step further towards the earlier tasks (the authors used 0.5)"),
               _replay_ratio(0.0, "fraction of each combined batch replayed from memory, in [0, 1) (0: GEM as "
                                  "published; Hsu et al.'s GEM also trained on its memory, about 0.5)"))

    def __init__(self, generator: torch.Generator | None = None, **hparams):
        super().__init__(generator, **hparams)
        self.steps = 0  # steps taken with a non-empty memory
        self.projections = 0  # of those, steps whose gradient broke a constraint and was projected
        self._by_task: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # per task: x, y, ids

    transform_batch = Replay.transform_batch  # with replay_ratio > 0 it also replays its memory, as Hsu et al. did

    def make_memory(self) -> _Memory:
        return TaskBalancedBuffer(self.buffer_size, self.generator)

    def before_task(self, model: nn.Module, task: Task) -> None:
        """Split the memory by task once, as model inputs; it changes only between tasks."""
        super().before_task(model, task)
        x, y, ids = self.memory.contents()
        self._by_task = [(to_inputs(x[ids == k]), y[ids == k], ids[ids == k]) for k in ids.unique().tolist()]

    def task_gradients(self, model: nn.Module, params: list[nn.Parameter]) -> torch.Tensor:
        """(earlier tasks, n_params): each earlier task's loss gradient on up to gem_batch of its samples."""
        rows = []
        with torch.enable_grad():
            for x, y, ids in self._by_task:
                if len(y) > self.gem_batch:
                    pick = torch.randperm(len(y), generator=self.generator)[: self.gem_batch].to(y.device)
                    x, y, ids = x[pick], y[pick], ids[pick]
                loss = F.cross_entropy(forward(model, x, ids), y)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                       for g, p in zip(grads, params)]))
        return torch.stack(rows)

    def before_step(self, model: nn.Module) -> None:
        """Project the step's gradient when it would raise any earlier task's memory loss."""
        if not self._by_task:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        self.steps += 1
        g = flat_grad(params)  # (n,)
        g_new = project_gem(g, self.task_gradients(model, params), self.margin)  # G: (earlier tasks, n)
        if g_new is not g:
            set_flat_grad(params, g_new)
            self.projections += 1
