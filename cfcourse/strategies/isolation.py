"""Parameter isolation, by freezing the shared body (`freeze`) or with task adapters: a small low-rank weight
change per task, chosen by task id; see lesson 06.

`freeze` trains the whole model on the first task(s), then freezes the shared body, so only the output layer
keeps learning: the bridge to parameter-efficient fine-tuning (lesson 09), train a few new weights and keep
the old ones fixed.

The first task trains the whole model. After it, the shared body is frozen
and every later task t gets its own low-rank adapter on each Linear layer of
the body (LoRA-style, Hu et al. 2021):

    y = W x + b + (alpha / sqrt(r)) * B_t A_t x        A_t: (r, in), B_t: (out, r), B_t = 0 at the start

Each task trains only its adapter and its own output head; at test time the
task id the model is called with picks the adapter (task 1 uses none). No
task can change another task's parameters, so in task-incremental learning
forgetting is exactly zero, by construction, at the cost of r * (in + out)
new parameters per layer and task instead of in * out. The same update
(a frozen base plus a trainable low-rank B A) is LoRA, the parameter-efficient
fine-tuning of language models in lessons 08-09. The scale alpha / sqrt(r) is
that of rank-stabilised LoRA (Kalajdzievski 2023): with it one step changes
B A by about the same amount at every rank, so ranks can be compared at one
learning rate (LoRA's original alpha / r makes a low rank take far larger
steps than a high one).

The adapters live on the model itself (a `task_adapters` ModuleDict inside
each adapted Linear, and a forward hook that adds B A x), so the model keeps
its class, its parameter names and its `forward`, and the optimiser sees the
adapters through `model.parameters()`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Task
from . import HParam, Strategy, register



def output_layer_names(model: nn.Module) -> list[str]:
    """Names of the output layer's parameters: `head`/`heads` if the model has one, else the last layer's."""
    for attr in ("heads", "head"):
        if isinstance(getattr(model, attr, None), nn.Module):
            return [f"{attr}.{n}" for n, _ in getattr(model, attr).named_parameters()]
    leaves = [(name, m) for name, m in model.named_modules() if not list(m.children())
              and list(m.parameters(recurse=False))]
    if not leaves:
        raise ValueError("model has no parameters to split into a body and an output layer")
    prefix, last = leaves[-1]
    return [f"{prefix}.{n}" if prefix else n for n, _ in last.named_parameters(recurse=False)]


def freeze_body(model: nn.Module) -> list[str]:
    """Turn off gradients of every parameter outside the output layer; returns their names; see lesson 06."""
    keep = set(output_layer_names(model))
    frozen = []
    for name, p in model.named_parameters():
        if name not in keep:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


@register
class Freeze(Strategy):
    """Parameter isolation: after `freeze_after` tasks the shared body stops learning, only heads train.

    With a multi-head model (task-IL) each later task then changes only its own
    head, so earlier tasks cannot be forgotten at all; the price is a body that
    learned only from the first task(s). The freezing stays on the model after
    the run (set `requires_grad_(True)` to undo it).
    """

    name = "freeze"
    hparams = (HParam("freeze_after", int, 1, low=1, help="number of tasks after which the body is frozen"),)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.tasks_done = 0
        self.frozen: list[str] = []  # names of the frozen parameters

    def after_task(self, model: nn.Module, task: Task) -> None:
        self.tasks_done += 1
        if self.tasks_done == self.freeze_after:
            self.frozen = freeze_body(model)


ADAPTERS = "task_adapters"  # attribute name of the ModuleDict inside each adapted Linear
NEXT = "next"  # key of the adapter made ready for the next task (see TaskAdapters.after_task)


def lora_update(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scale: float) -> torch.Tensor:
    """scale * B (A x) for x (batch, in), A (r, in), B (out, r): a low-rank weight change applied; see lesson 06.

    B (A x), never (B A) x: the (out, in) product is never formed, so the cost is r * (in + out) per sample.
    """
    return F.linear(F.linear(x, A), B) * scale  # (batch, out)


def lora_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, A: torch.Tensor,
                B: torch.Tensor, scale: float) -> torch.Tensor:
    """A Linear layer with a frozen weight and a low-rank update: W x + b + scale * B A x; see lesson 06."""
    return F.linear(x, weight, bias) + lora_update(x, A, B, scale)


class LowRankAdapter(nn.Module):
    """The weight change (alpha / sqrt(r)) * B A of one Linear layer for one task, B = 0 at first; see lesson 06."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float,
                 device: torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.rank, self.scale = rank, alpha / math.sqrt(rank)
        self.A = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=dtype))  # (r, in)
        self.B = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=dtype))  # (out, r)
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # as nn.Linear (and LoRA) initialise a weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lora_update(x, self.A, self.B, self.scale)  # (batch, out)

    def delta_weight(self) -> torch.Tensor:
        """The full (out, in) weight change this adapter adds to W; its rank is at most r."""
        return self.B @ self.A * self.scale

    def extra_repr(self) -> str:
        return f"in={self.A.shape[1]}, out={self.B.shape[0]}, rank={self.rank}, scale={self.scale:g}"


def adaptable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The Linear layers of `model` outside its output layer, by name: where task adapters go; see lesson 06."""
    output = {name.rsplit(".", 1)[0] for name in output_layer_names(model)}
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) and name not in output}


def adapter_parameter_count(layers: dict[str, nn.Linear] | list[nn.Linear], rank: int) -> int:
    """Parameters of one task's adapters: the sum over layers of rank * (in + out); see lesson 06."""
    layers = layers.values() if isinstance(layers, dict) else layers
    return sum(rank * (m.in_features + m.out_features) for m in layers)


def _task_id_of_call(args: tuple, kwargs: dict):
    """The task id a multi-head model is called with: model(x, task_id) or model(x, task_id=...)."""
    return args[1] if len(args) > 1 else kwargs.get("task_id")


@register
class TaskAdapters(Strategy):
    """One low-rank adapter per task on a frozen shared body (task-IL): zero forgetting; see lesson 06.

    Needs a model that is called with the task id (`multi_head = True`, like
    `MultiHeadMLP`): that id picks the adapter, in training and at test time.
    `verbose=True` prints each task's parameter count when its training begins.
    Each task's optimiser must be made after the previous task ended (as
    `run_tasks` does), so that it holds the new adapter; a run that breaks
    this is stopped with an error rather than silently training nothing.
    """

    name = "adapters"
    hparams = (HParam("rank", int, 8, low=1, help="rank r of each task's adapters: r * (in + out) parameters a layer"),
               HParam("adapter_alpha", float, 12.0, low=0.0, low_open=True,
                      help="adapters add (adapter_alpha / sqrt(rank)) * B A x to each Linear layer's output"))

    def __init__(self, verbose: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.verbose = verbose
        self.model: nn.Module | None = None
        self.layers: dict[str, nn.Linear] = {}  # the adapted Linear layers, by name
        self.base_task: int | None = None  # the task that trained the shared body
        self.tasks: list[int] = []  # task ids that have their own adapter, in training order
        self.param_counts: dict[int, int] = {}  # task id -> parameters its training changed
        self._task_ids = None  # the task id(s) of the model call in progress
        self._output: set[str] = set()  # names of the output layer's parameters
        self._watch: list[nn.Parameter] = []  # what the current task trains: its adapters and the output layer
        self._check_step = False
        self._handles: list = []

    # --- setting up the model ---------------------------------------------------------------------

    def _attach(self, model: nn.Module) -> None:
        if not getattr(model, "multi_head", False):
            raise ValueError("adapters: this model is called without a task id (multi_head is not True), so "
                             "nothing could pick a task's adapter at test time. Use a multi-head model such as "
                             "cfcourse.models.MultiHeadMLP (task-incremental learning, --scenario task).")
        layers = adaptable_linears(model)
        if not layers:
            raise ValueError("adapters: the model has no nn.Linear layer outside its output layer to put adapters "
                             "on; give it at least one hidden layer, e.g. MultiHeadMLP(hidden=(400, 400))")
        for name, m in layers.items():
            if self.rank > min(m.in_features, m.out_features):
                raise ValueError(f"adapters: rank must be at most min(in, out) = {min(m.in_features, m.out_features)}"
                                 f" of layer {name} ({m.in_features} -> {m.out_features}), got {self.rank}; a "
                                 "higher rank costs more parameters than the layer itself and adds nothing")
        self.model, self.layers, self._output = model, layers, set(output_layer_names(model))
        self._handles.append(model.register_forward_pre_hook(self._read_task_ids, with_kwargs=True))
        self._handles.append(model.register_forward_hook(self._forget_task_ids))
        for m in layers.values():
            m.add_module(ADAPTERS, nn.ModuleDict())
            self._handles.append(m.register_forward_hook(self._add_adapter))

    def _read_task_ids(self, model: nn.Module, args: tuple, kwargs: dict) -> None:
        self._task_ids = _task_id_of_call(args, kwargs)

    def _forget_task_ids(self, model: nn.Module, args: tuple, output) -> None:
        self._task_ids = None  # a later call of a part of the model (model.body(x)) must not reuse them

    def _add_adapter(self, layer: nn.Linear, inputs: tuple, out: torch.Tensor) -> torch.Tensor:
        adapters, ids, x = getattr(layer, ADAPTERS), self._task_ids, inputs[0]
        if ids is None:
            raise RuntimeError("adapters: the model (or a part of it) was called without a task id, so no adapter "
                               "can be chosen; call the whole model as model(x, task_id)")
        if not isinstance(ids, torch.Tensor):
            key = str(int(ids))
            return out + adapters[key](x) if key in adapters else out
        for t in ids.unique().tolist():  # per-sample task ids: each sample gets its own task's adapter
            if str(t) in adapters:
                mask = (ids == t).reshape(-1, *[1] * (out.dim() - 1))  # (batch, 1, ...)
                out = out + mask * adapters[str(t)](x)
        return out

    def _new_adapters(self, key: str) -> None:
        for m in self.layers.values():
            getattr(m, ADAPTERS)[key] = LowRankAdapter(m.in_features, m.out_features, self.rank,
                                                       self.adapter_alpha, m.weight.device, m.weight.dtype)

    def adapter(self, layer: str, task_id: int) -> LowRankAdapter:
        """Task `task_id`'s adapter on the Linear layer named `layer` (e.g. 'body.0')."""
        return getattr(self.layers[layer], ADAPTERS)[str(task_id)]

    def adapter_parameters(self, task_id: int) -> list[nn.Parameter]:
        """Every parameter of task `task_id`'s adapters."""
        return [p for m in self.layers.values() for p in getattr(m, ADAPTERS)[str(task_id)].parameters()]

    def base_parameter_count(self) -> int:
        """Parameters of the model without any adapter: what naive fine-tuning trains for every task."""
        return sum(p.numel() for name, p in self.model.named_parameters() if f".{ADAPTERS}." not in name)

    # --- the hooks --------------------------------------------------------------------------------

    def before_task(self, model: nn.Module, task: Task) -> None:
        if self.model is None:
            self._attach(model)
        elif model is not self.model:
            raise ValueError("adapters: this strategy already holds the adapters of another model; "
                             "make a new one for each model, e.g. make_strategy('adapters')")
        if task.task_id == self.base_task or task.task_id in self.tasks:
            raise ValueError(f"adapters: task {task.task_id + 1} was trained already and its parameters are frozen;"
                             " each task is trained once")
        if self.base_task is None:  # the first task trains the body itself
            self.param_counts[task.task_id] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        else:
            for m in self.layers.values():  # bind the adapter made ready after the last task to this task
                adapters = getattr(m, ADAPTERS)
                for a in adapters.values():
                    a.requires_grad_(False)
                adapters[str(task.task_id)] = adapters.pop(NEXT).requires_grad_(True)
            self.tasks.append(task.task_id)
            self.param_counts[task.task_id] = self._count_for_task(model)
            self._watch = self.adapter_parameters(task.task_id) + [
                p for name, p in model.named_parameters() if name in self._output]
            self._check_step = True
        if self.verbose:
            print(self.describe(task.task_id))

    def _count_for_task(self, model: nn.Module) -> int:
        """Adapter parameters plus this task's share of the output layer (one head of n_heads)."""
        output = sum(p.numel() for name, p in model.named_parameters() if name in self._output)
        head = output // getattr(model, "n_heads", 1)
        return adapter_parameter_count(self.layers, self.rank) + head

    def describe(self, task_id: int) -> str:
        """One line: how many parameters task `task_id` trains, against the whole model."""
        n, total = self.param_counts[task_id], self.base_parameter_count()
        what = (f"rank-{self.rank} adapters on {len(self.layers)} layers + its head" if task_id in self.tasks
                else "the whole model")
        return f"task {task_id + 1}: trains {n:,} parameters ({what}), {n / total:.1%} of the model's {total:,}"

    def before_step(self, model: nn.Module) -> None:
        grads = [p.grad for p in self._watch if p.grad is not None]
        if grads and not all(torch.isfinite(g).all() for g in grads):  # stop before the step spreads NaN
            raise RuntimeError(f"adapters: training diverged on task {self.tasks[-1] + 1} (a gradient is inf or "
                               f"NaN) with rank {self.rank} and adapter_alpha {self.adapter_alpha}; lower the "
                               "learning rate or adapter_alpha. The other tasks' parameters were not changed.")

    def after_step(self, model: nn.Module) -> None:
        if not self._check_step:
            return
        self._check_step = False  # once per task: did the optimiser move this task's adapter?
        b = self.adapter(next(iter(self.layers)), self.tasks[-1]).B
        if b.grad is not None and b.grad.abs().sum() > 0 and not b.detach().abs().sum() > 0:
            raise RuntimeError("adapters: the optimiser does not hold this task's adapter, so it would never learn."
                               " Make each task's optimiser after the previous task ended, e.g. "
                               "train_task(model, tasks, t, sgd(lr)(model.parameters()), strategy), as run_tasks "
                               "does")

    def after_task(self, model: nn.Module, task: Task) -> None:
        if self.base_task is None:
            self.base_task = task.task_id
            freeze_body(model)  # every parameter outside the output layer: the shared body
        self._new_adapters(NEXT)  # made now so that the next task's optimiser, made before it begins, holds it

    def remove(self) -> None:
        """Take the hooks and adapters off the model: it computes its base function again."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for m in self.layers.values():
            delattr(m, ADAPTERS)
        self.model, self.layers, self._watch = None, {}, []
