"""Figures and widgets of the language-model lessons: perplexity before and after, the recorded run, the trade-off.

Every widget redraws from a plain function that returns a figure, so the
functions are tested without a browser, as in cfcourse.widgets.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..widgets import scrubber, show_figure


def plot_perplexity_change(before: dict[str, float], after: dict[str, float], new_domain: str | None = None,
                           ax=None, title: str = "Perplexity on held-out text of each domain",
                           labels: tuple[str, str] = ("before", "after")):
    """Pairs of bars per domain (before, after) with the change written above; the new domain is marked."""
    names = list(before)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.4))
    x = np.arange(len(names))
    b = [before[d] for d in names]
    a = [after[d] for d in names]
    ax.bar(x - 0.2, b, 0.4, label=labels[0], color="#9ab")
    ax.bar(x + 0.2, a, 0.4, label=labels[1], color="#d62")
    for i, d in enumerate(names):
        ax.annotate(f"{a[i] / b[i] - 1:+.0%}", (x[i] + 0.2, a[i]), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(x, [f"{d}\n(new)" if d == new_domain else d for d in names])
    ax.set_ylabel("perplexity (lower is better)")
    ax.set_title(title)
    ax.legend(frameon=False)
    return ax


def step_figure(snapshots, index: int, new_domain: str = "legal"):
    """Perplexity of each domain across the recorded run (relative to step 0), up to snapshot `index`, and the
    model's answer at that step; the callback of step_viewer."""
    steps = [s.step for s in snapshots]
    names = list(snapshots[0].ppl)
    fig, (ax, tx) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1.1, 1]})
    for d in names:
        rel = [s.ppl[d] / snapshots[0].ppl[d] - 1 for s in snapshots]
        style = dict(lw=2.5) if d == new_domain else dict(lw=1.5, ls="--")
        line, = ax.plot(steps, np.array(rel) * 100, label=d, alpha=0.25, **style)
        ax.plot(steps[:index + 1], np.array(rel[:index + 1]) * 100, color=line.get_color(), **style)
        ax.plot(steps[index], rel[index] * 100, "o", color=line.get_color())
    ax.axhline(0, color="k", lw=0.8)
    ax.axvline(steps[index], color="0.5", lw=0.8)
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel("perplexity change from step 0 (%)")
    ax.set_title(f"step {steps[index]}")
    ax.legend(frameon=False, fontsize=8)
    tx.axis("off")
    import textwrap

    answer = textwrap.fill(" ".join(snapshots[index].answer.split()), 60)
    tx.text(0, 1, f"The model's answer at step {steps[index]}:\n\n{answer}", va="top", fontsize=9, family="serif")
    fig.tight_layout()
    return fig


def step_viewer(snapshots, question: str = "", new_domain: str = "legal"):
    """A slider over a recorded fine-tuning run: each domain's perplexity and the model's answer at that step."""
    if not snapshots:
        raise ValueError("no snapshots: record the run with lab.train(..., record={...})")
    return scrubber(len(snapshots), lambda i: step_figure(snapshots, i, new_domain), description="snapshot",
                    start=len(snapshots) - 1, step_labels=lambda i: f"step {snapshots[i].step}" +
                    (f" · {question}" if question else ""))


def plot_tradeoff(points: list[dict], selected: int | None = None, ax=None,
                  title: str = "Learning the new domain against forgetting the old ones"):
    """One point per setting: new-domain gain (x) against old-domain rise (y), both in %; `selected` is ringed.

    Each point is a dict with "label", "gain" and "rise" (from cures.tradeoff_point) and optionally "kind"
    (the family of the setting, one colour each). The best corner is bottom right: learned much, forgot little.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.6))
    kinds = list(dict.fromkeys(p.get("kind", "setting") for p in points))
    colours = dict(zip(kinds, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3))
    for kind in kinds:
        mine = [p for p in points if p.get("kind", "setting") == kind]
        ax.scatter([100 * p["gain"] for p in mine], [100 * p["rise"] for p in mine], s=40, label=kind,
                   color=colours[kind], zorder=3)
    for p in points:
        ax.annotate(p["label"], (100 * p["gain"], 100 * p["rise"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    if selected is not None:
        p = points[selected]
        ax.scatter([100 * p["gain"]], [100 * p["rise"]], s=260, facecolors="none", edgecolors="k", lw=1.5, zorder=4)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("new domain learned: perplexity drop (%)  →  better")
    ax.set_ylabel("old domains forgotten: perplexity rise (%)")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    return ax


def tradeoff_text(point: dict) -> str:
    """The settings and numbers of one point of the trade-off, as a few lines of text."""
    lines = [point["label"], f"new domain: perplexity {-100 * point['gain']:+.0f}%",
             f"old domains (geometric mean): {100 * point['rise']:+.0f}%"]
    lines += [f"  {d}: {100 * v:+.0f}%" for d, v in point.get("old_rise", {}).items()]
    if point.get("seconds") is not None:
        lines.append(f"training: {point['seconds']:.0f} s")
    return "\n".join(lines)


def tradeoff_figure(points: list[dict], selected: int):
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    plot_tradeoff(points, selected, ax=ax)
    fig.tight_layout()
    return fig


def tradeoff_viewer(points: list[dict]):
    """The trade-off figure with a list of its settings: selecting one rings its point and shows its numbers."""
    import ipywidgets as w

    if not points:
        raise ValueError("no points: train at least one setting first")
    chooser = w.Select(options=[(p["label"], i) for i, p in enumerate(points)], value=0, rows=min(8, len(points)),
                       description="setting", layout=w.Layout(width="330px"))
    details = w.HTML()
    out = w.Output()

    def redraw(change=None) -> None:
        i = chooser.value
        details.value = "<pre>" + tradeoff_text(points[i]) + "</pre>"
        with out:
            out.clear_output(wait=True)
            show_figure(tradeoff_figure(points, i))

    chooser.observe(redraw, names="value")
    redraw()
    return w.HBox([out, w.VBox([chooser, details])])


def plot_stages(rows: dict[str, dict[str, float]], recorded: list[dict[str, dict[str, float]]] | None = None,
                focus: str = "medical", ax=None, title: str = "Each domain across the stages"):
    """Perplexity of each domain at each stage, relative to the first stage (%): your run in bold, recorded seeds
    thin; the `focus` domain is drawn thickest. `rows` is {stage: {domain: perplexity}}, in stage order."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7.2, 4.2))
    stages = list(rows)
    first = rows[stages[0]]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, d in enumerate(first):
        c = colours[i % len(colours)]
        for rec in recorded or []:
            ax.plot(stages, [100 * (rec[s][d] / rec[stages[0]][d] - 1) for s in stages], color=c, lw=0.8, alpha=0.5)
        ax.plot(stages, [100 * (rows[s][d] / first[d] - 1) for s in stages], "o-", color=c, label=d,
                lw=3.5 if d == focus else 1.8)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("perplexity change from the pretrained model (%)")
    ax.set_xlabel("stage" + (" (thin lines: recorded seeds)" if recorded else ""))
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    return ax


def wise_figure(curve: dict[float, dict[str, float]], start: dict[str, float], a: float, new: str = "legal",
                old: str = "medical"):
    """The interpolation line: new-domain gain against old-domain rise for each weight a, with `a` ringed."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    keys = sorted(curve)
    gain = [100 * (1 - curve[k][new] / start[new]) for k in keys]
    rise = [100 * (curve[k][old] / start[old] - 1) for k in keys]
    ax.plot(gain, rise, "o-", color="#d62")
    for k, g, r in zip(keys, gain, rise):
        ax.annotate(f"a={k:g}", (g, r), xytext=(4, 3), textcoords="offset points", fontsize=8)
    i = keys.index(a)
    ax.scatter([gain[i]], [rise[i]], s=260, facecolors="none", edgecolors="k", lw=1.5, zorder=4)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel(f"{new} learned: perplexity drop (%)  →  better")
    ax.set_ylabel(f"{old} forgotten: perplexity rise (%)")
    ax.set_title(f"(1 − a)·start + a·tuned, a = {a:g}: {new} {-gain[i]:+.0f}%, {old} {rise[i]:+.0f}%")
    fig.tight_layout()
    return fig


def wise_viewer(curve: dict[float, dict[str, float]], start: dict[str, float]):
    """A slider along the interpolation between the start model (a = 0) and the tuned one (a = 1)."""
    keys = sorted(curve)
    if len(keys) < 2:
        raise ValueError("need the perplexities of at least two interpolation weights")
    return scrubber(len(keys), lambda i: wise_figure(curve, start, keys[i]), description="a",
                    start=len(keys) // 2, step_labels=lambda i: f"a = {keys[i]:g}")


def plot_long_run(seeds: list[dict], stage1: list[dict[str, float]], lessons_steps: int,
                  mine: dict[str, float] | None = None, axes=None):
    """Stage 2 run on: medical rise (left) and legal gain (right) against steps, one thin line per recorded seed
    and their median bold; `mine` (a {"medical", "legal"} rise and gain at `lessons_steps`) is your run.

    `seeds` are the record's seeds (each with a "trajectory" of {"step", "medical", "legal"}), `stage1` each
    seed's perplexities before stage 2.
    """
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10.5, 3.8))
    steps = [r["step"] for r in seeds[0]["trajectory"]]
    for ax, d, sign, what in ((axes[0], "medical", 1, "medical perplexity rise (%): forgotten"),
                              (axes[1], "legal", -1, "legal perplexity drop (%): learned")):
        curves = np.array([[100 * sign * (r[d] / s1[d] - 1) for r in x["trajectory"]]
                           for x, s1 in zip(seeds, stage1)])
        for k, curve in enumerate(curves):
            ax.plot([0] + steps, [0, *curve], color="#d62" if d == "medical" else "#27a", lw=0.9, alpha=0.5,
                    label="recorded seeds" if k == 0 else None)
        ax.plot([0] + steps, [0, *np.median(curves, axis=0)], "o-", color="#d62" if d == "medical" else "#27a",
                lw=2.6, label=f"median of {len(seeds)} seeds")
        ax.axvline(lessons_steps, color="k", lw=0.8, ls=":")
        ax.annotate("the lessons' run", (lessons_steps, ax.get_ylim()[1]), xytext=(3, -12),
                    textcoords="offset points", fontsize=8)
        if mine is not None:
            ax.scatter([lessons_steps], [100 * mine[d]], s=90, marker="*", color="k", zorder=5, label="your run")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("steps of stage 2 (legal text)")
        ax.set_ylabel(what)
        ax.legend(frameon=False, fontsize=8)
    axes[0].figure.tight_layout()
    return axes
