"""Nothing wrong reported as right: a bad value is refused by the one validation step of `orchestra train` and
`orchestra sweep` before any job directory exists — exit status 2, every problem at once, one line each naming the
key and a fix, the member named in a sweep; no traceback and nothing under output_root."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestra.cli import main
from orchestra.config import validate
from orchestra.config.compose import compose, group_options
from orchestra.config.validate import config_problems, validation_view

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], root: Path, capsys) -> tuple[int, list[str]]:
    """``orchestra ARGS output_root=ROOT`` in this process: exit status and stderr's lines."""
    code = main([*args, f"output_root={root}"])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err.strip("\n").splitlines()


def _refused(args: list[str], root: Path, capsys) -> list[str]:
    code, lines = _run(args, root, capsys)
    assert code == 2, lines
    assert lines and lines[0].startswith("error: "), lines
    assert not any(root.iterdir()), f"created under output_root: {list(root.rglob('*'))}"
    return lines


@pytest.mark.parametrize(("override", "words"), [
    ("optim.lr=abc", ["optim.lr", "'abc'", "optim.lr=0.001"]),
    ("optim.lr=-0.1", ["optim.lr", "positive", "optim.lr=0.001"]),
    ("seed=abc", ["seed", "'abc'", "seed=0"]),
    ("data.batch_size=0", ["data.batch_size", "got 0", "data.batch_size=<positive integer>"]),
    ("trainer.max_epochs=-1", ["trainer.max_epochs", "got -1", "trainer.max_epochs=5"]),
    ("trainer.max_epochs=1.5", ["trainer.max_epochs", "got 1.5", "trainer.max_epochs=5"]),
    ("trainer.max_epochs=0", ["trainer.max_epochs=0 trains nothing", "trainer.max_epochs=1 or more"]),
    ("data.train_limit=0", ["data.train_limit", "got 0", "data.train_limit=<positive integer> or null"]),
    # 100 images < one batch of 256, and the last partial batch is dropped: no epoch trains (was COMPLETED, nan)
    ("data.train_limit=100", ["data.batch_size=256", "100 training images", "data.batch_size=100 or less"]),
    ("trainer.devices=3", ["data.batch_size=256", "3 ranks", "data.batch_size=255"]),
    ("+trainer.max_steps=0", ["trainer.max_steps", "got 0", "trainer.max_steps=1000"]),
])
def test_train_refuses_a_bad_value_in_one_line_before_the_job_dir(tmp_path, capsys, override, words):
    lines = _refused(["train", override], tmp_path, capsys)
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_every_bad_value_of_one_command_is_reported_together(tmp_path, capsys):
    lines = _refused(["train", "optim.lr=abc", "seed=abc", "data.batch_size=0", "trainer.max_epochs=1.5"],
                     tmp_path, capsys)
    assert lines[0] == "error: 4 problems in the config; nothing was created:"
    assert len(lines) == 5, lines
    for key in ("optim.lr", "seed", "data.batch_size", "trainer.max_epochs"):
        assert sum(line.lstrip().startswith(key) for line in lines[1:]) == 1, (key, lines)


def test_imagefolder_names_all_its_missing_keys_at_once(tmp_path, capsys):
    lines = _refused(["train", "data=imagefolder"], tmp_path, capsys)
    text = "\n".join(lines)
    assert "data.root" in text and "data.num_classes" in text, text
    assert len(lines) == 3, lines  # the count, then one line each


def test_gpus_asked_of_a_machine_without_them_are_refused_but_not_for_slurm(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(validate, "_visible_gpus", lambda: 0)
    lines = _refused(["train", "trainer=gpu"], tmp_path, capsys)
    assert len(lines) == 1 and "trainer.accelerator=gpu" in lines[0] and "trainer.accelerator=cpu" in lines[0]
    # on SLURM the allocation brings the GPUs: the login node need not have any
    code, lines = _run(["sweep", "trainer=gpu", "launcher=slurm", "seed=0,1", "-m", "--dry-run"], tmp_path, capsys)
    assert code == 0, lines
    monkeypatch.setattr(validate, "_visible_gpus", lambda: 1)
    problems = config_problems(validation_view(compose(["trainer=gpu", "trainer.devices=2"])))
    assert len(problems) == 1 and "trainer.devices=2" in problems[0] and "1 CUDA GPU" in problems[0], problems


def test_a_sweep_names_each_bad_member_and_creates_nothing(tmp_path, capsys):
    lines = _refused(["sweep", "optim.lr=abc,0.1", "seed=abc,0", "-m"], tmp_path, capsys)  # not a dry run
    assert lines[0] == "error: 4 problems in 3 of 4 sweep members; nothing was created:", lines
    assert lines[1:] == [
        "  member [0] optim.lr=abc seed=abc: seed must be a whole number from 0 to 2**32-1, got 'abc'; set e.g. seed=0",
        "  member [0] optim.lr=abc seed=abc: optim.lr must be a positive number, got 'abc'; set e.g. optim.lr=0.001",
        "  member [1] optim.lr=abc seed=0: optim.lr must be a positive number, got 'abc'; set e.g. optim.lr=0.001",
        "  member [2] optim.lr=0.1 seed=abc: seed must be a whole number from 0 to 2**32-1, got 'abc'; set e.g. seed=0",
    ]


def test_a_problem_every_member_shares_is_said_once(tmp_path, capsys):
    lines = _refused(["sweep", "seed=range(50)", "trainer.max_epochs=0", "-m", "--dry-run"], tmp_path, capsys)
    assert lines == ["error: all 50 members: trainer.max_epochs=0 trains nothing (the run would end with nan "
                     "metrics); set trainer.max_epochs=1 or more"]


@pytest.mark.parametrize("command", [["sweep", "-m"], ["train"]])
@pytest.mark.parametrize("value", ["interval(0.001,0.1)", "tag(log,interval(0.001,0.1))"])
def test_interval_sweeps_ask_for_a_grid_in_one_line(tmp_path, capsys, command, value):
    lines = _refused([command[0], f"optim.lr={value}", *command[1:]], tmp_path, capsys)
    assert len(lines) == 1, lines
    assert "search sweeper" in lines[0] and "optim.lr=a,b,c" in lines[0] and "range(" in lines[0], lines[0]


@pytest.mark.parametrize("overrides", [
    [], *([f"method={m}"] for m in group_options("method")),
    *([f"+experiment={e}"] for e in group_options("experiment")),
    ["trainer.max_epochs=-1", "+trainer.max_steps=10"],  # -1: max_steps decides, as in Lightning
    ["trainer.max_epochs=null"], ["optim.lr=1"], ["data.train_limit=256", "data.batch_size=256"],
    ["trainer.devices=2", "data.batch_size=128"], ["trainer.limit_train_batches=0.5"],
])
def test_the_shipped_configs_and_good_values_pass(overrides):
    assert config_problems(validation_view(compose(overrides))) == []


def test_a_fraction_of_batches_that_rounds_to_none_is_refused():
    problems = config_problems(validation_view(compose(["data.train_limit=512", "trainer.limit_train_batches=0.1"])))
    assert len(problems) == 1 and "trainer.limit_train_batches=0.1 of 2 training batches" in problems[0], problems


def test_a_dry_run_sweep_validates_without_importing_torch(tmp_path):
    code = ("import sys\nfrom orchestra.cli.main import main\n"
            f"code = main(['sweep', 'seed=range(20)', 'optim.lr=0.1,0.2', 'output_root={tmp_path}', '-m', '--dry-run'])"
            "\nprint('torch' in sys.modules, code)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.stdout.splitlines()[-1] == "False 0", done.stdout[-500:] + done.stderr


# Runs in a fresh interpreter in the repository (as a reader runs the README): the README's own code block, then the
# Module it builds is given what a user might pass for a batch.
README_PROBE = """
import json, re, sys, torch
block = [b for b in re.findall(r"```python\\n(.*?)```", open("README.md").read(), re.S) if "orchestra.Module(" in b][0]
exec(block)
answers = []
for batch in (torch.randn(8, 1, 28, 28), [torch.randn(8, 1, 28, 28), torch.zeros(8)]):
    try:
        module(batch, stage="train")
        answers.append(["accepted", ""])
    except Exception as err:
        answers.append([type(err).__name__, str(err)])
good = module({"image": torch.randn(8, 1, 28, 28), "sample_idx": torch.arange(4).repeat(2)}, stage="train")
answers.append(["loss", str(bool(torch.isfinite(good["loss"])))])
print(json.dumps(answers))
"""


def test_the_readme_module_given_a_plain_tensor_names_the_batch_contract_not_the_values():
    done = subprocess.run([sys.executable, "-c", README_PROBE], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    tensor, listed, good = json.loads(done.stdout.splitlines()[-1])
    for (kind, message), got in [(tensor, "a Tensor of shape [8, 1, 28, 28]"),
                                 (listed, "a list of 2 (Tensor [8, 1, 28, 28], Tensor [8])")]:
        assert kind == "TypeError", (kind, message[:500])
        assert len(message.splitlines()) < 5 and len(message) < 400, message
        assert "tensor(" not in message and "e-01" not in message, message  # no values
        assert "'image'" in message and "'label'" in message and got in message, message
    assert good == ["loss", "True"]  # the dict the message asks for is accepted


def test_shared_and_own_problems_of_members_are_told_apart(tmp_path, capsys):
    lines = _refused(["sweep", "seed=abc,0", "data.batch_size=0", "-m", "--dry-run"], tmp_path, capsys)
    assert lines == ["error: 2 problems in 2 of 2 sweep members; nothing was created:",
                     "  all 2 members: data.batch_size must be a positive integer, got 0; "
                     "set data.batch_size=<positive integer>",
                     "  member [0] seed=abc: seed must be a whole number from 0 to 2**32-1, got 'abc'; set e.g. seed=0"]


def test_a_long_list_of_problems_is_cut_to_a_screen():
    found = [(f"[{i}] seed={i}", [f"problem {i}"]) for i in range(40)]
    lines = validate.sweep_message(found, 41).splitlines()
    assert lines[0] == "40 problems in 40 of 41 sweep members; nothing was created:"
    assert len(lines) == 1 + validate.MAX_LINES + 1 and lines[-1] == "  ... and 10 more", lines[-3:]
