"""The language-model lab of lessons 08-10 in one namespace: ``from cfcourse.lm import lab``.

The experiment is the course's central example: SmolLM2-135M-Instruct fine-tuned on medical text, then on
legal text, measured on five domains at every stage. Its parts live in one file each; this module gathers what
the lessons and the command line (lm-record, lm-sweep) call, and everything else is imported from its own file:

- cfcourse.lm.settings: the domains, LabSettings and `settings()` (every size, by run mode), threads;
- cfcourse.lm.texts: the held-out, validation, training and replay blocks, and the medical questions;
- cfcourse.lm.runs: a run trained, measured and saved in the runs folder, and read back;
- cfcourse.lm.story: medical then legal over seeds, the record, and stage 2's chosen learning rate;
- cfcourse.lm.sweep: the trade-off plane and the cures' sweep.
"""
from __future__ import annotations

from .runs import fresh_model, reuse, train
from .settings import ALL_DOMAINS, HEADLINE, settings, stage1_config, stage2_config, use_threads
from .story import STAGE1, STAGE2, baseline, chosen_lr, load_record, record, record_table, story_numbers
from .sweep import load_sweep, point, recorded_points, sweep, sweep_grid
from .texts import ask, held_out, medical_questions, old_text, train_text

__all__ = ["ALL_DOMAINS", "HEADLINE", "STAGE1", "STAGE2", "ask", "baseline", "chosen_lr", "fresh_model", "held_out",
           "load_record", "load_sweep", "medical_questions", "old_text", "point", "record", "record_table",
           "recorded_points", "reuse", "settings", "stage1_config", "stage2_config", "story_numbers", "sweep",
           "sweep_grid", "train", "train_text", "use_threads"]
