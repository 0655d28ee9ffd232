"""docs/own-model.md: both examples run as written, on a model and data of the user's kind."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = (ROOT / "docs" / "own-model.md").read_text(encoding="utf-8")
EXAMPLES = re.findall(r"```python\n(.*?)```", PAGE, re.S)


def test_the_page_has_both_examples_and_the_readme_links_it():
    assert len(EXAMPLES) == 2
    assert "docs/own-model.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_a_classifier_of_ones_own_with_ewc_and_replay_with_ewc(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    exec(compile(EXAMPLES[0], "own-model.md: classifier", "exec"), {})
    out = capsys.readouterr().out
    assert "plain fine-tuning" in out and "['ewc']" in out and "['replay', 'ewc']" in out


def test_a_language_model_of_ones_own_with_a_cure_and_the_report(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    exec(compile(EXAMPLES[1], "own-model.md: language model", "exec"), {})
    assert (tmp_path / "my-forgetting-report" / "report.json").is_file()
    assert "hamlet" in capsys.readouterr().out


@pytest.mark.parametrize("bad, message", [
    ("empty", "train is empty"),
    ("float labels", "labels must be whole numbers"),
    ("negative labels", "labels must be class indices"),
    ("not a dataset", "must be a torch.utils.data.Dataset or DataLoader"),
])
def test_bad_datasets_are_refused_naming_the_argument(bad, message):
    import torch
    from torch.utils.data import TensorDataset

    from cfcourse.data import task_from_dataset

    x = torch.zeros(4, 3)
    train = {"empty": TensorDataset(x[:0], torch.zeros(0, dtype=torch.long)),
             "float labels": TensorDataset(x, torch.zeros(4)),
             "negative labels": TensorDataset(x, torch.tensor([0, 1, -1, 2])),
             "not a dataset": [(x[0], 0)]}[bad]
    with pytest.raises((ValueError, TypeError), match=message):
        task_from_dataset(train, TensorDataset(x, torch.zeros(4, dtype=torch.long)))


def test_a_model_without_weights_or_outputs_for_the_labels_is_refused():
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    from cfcourse.data import task_from_dataset
    from cfcourse.train import run_tasks

    data = TensorDataset(torch.rand(8, 3), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7]))
    task = task_from_dataset(data, data)
    with pytest.raises(ValueError, match="has no parameters"):
        run_tasks(nn.ReLU(), [task], progress=False)
    with pytest.raises(ValueError, match="labels up to 7, but the model gives 4 outputs"):
        run_tasks(nn.Linear(3, 4), [task], progress=False)


def test_importing_the_package_changes_no_global_setting():
    import subprocess
    import sys

    code = ("import torch; torch.set_num_threads(3); s = torch.random.get_rng_state(); "
            "import cfcourse, cfcourse.train, cfcourse.strategies, cfcourse.lm.finetune, cfcourse.cli; "
            "assert torch.get_num_threads() == 3 and torch.equal(s, torch.random.get_rng_state())")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
