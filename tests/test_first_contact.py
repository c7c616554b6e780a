"""What a new user meets first: errors that point at the fix (the closest valid name, the pip
command for a missing plugin), a sweep table that says why a job failed, and output worth reading
(a compact start for sweep jobs, progress lines in a log), and defaults that train a small table."""

import subprocess
import sys

import pytest

from tests import datasets

PLUGINS = {
    "optuna": ("hydra_plugins.hydra_optuna_sweeper", ("config", "optuna_sweeper", "_impl")),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", ("config", "joblib_launcher", "_core")),
}


def error_line(result) -> str:
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dlrun: error: "), result.err
    return lines[0]


@pytest.mark.parametrize(
    "typed,says",
    [
        ("optimizer.lrr=0.1", "optimizer.lrr: no setting 'lrr' in optimizer; did you mean lr?"),
        ("trainer.epochz=3", "trainer.epochz: no setting 'epochz' in trainer; did you mean epochs?"),
        ("optimizr.lr=1", "optimizr: no setting 'optimizr' at the top level; did you mean optimizer"),
        (
            "model=mpl",
            "model=mpl: no model option 'mpl' (model/mpl.yaml is in no config folder); did you mean mlp?",
        ),
        ("+trainer.epochz=3", "trainer.epochz: no setting 'epochz' in trainer; did you mean epochs?"),
        ("+modle=mlp", "modle: no setting 'modle' at the top level; did you mean model?"),
        ("+experiment=wine_mlp", "experiment is already in the defaults list: write experiment=wine_mlp"),
    ],
)
def test_a_misspelt_name_gets_the_closest_valid_ones_not_hydras_plus_advice(dlrun, typed, says):
    result = dlrun(typed, "trainer.epochs=1")
    assert result.code == 2
    line = error_line(result)
    assert says in line and "+" not in line.split(":", 2)[2].replace("without the +", "")


def test_a_bare_value_is_taken_as_a_one_item_list(dlrun, tmp_path):
    from dlrun import cli
    from tests import datasets

    root = datasets.write_names(tmp_path / "names_data")
    result = dlrun("experiment=names_char_rnn", f"dataset.root={root}", "trainer.epochs=1")
    assert result.code == 0, result.err
    checkpoint = result.run_dir / "checkpoints" / "best.pt"
    one = dlrun(f"ckpt={checkpoint}", "inputs=Jones", program=cli.predict_main)
    listed = dlrun(f"ckpt={checkpoint}", "inputs=[Jones]", program=cli.predict_main)
    assert one.code == 0, one.err
    assert one.out == listed.out and "Jones" in one.out
    typo = dlrun(f"ckpt={checkpoint}", "inputs=Jones", "topkk=2", program=cli.predict_main)
    assert typo.code == 2 and "topkk: no setting 'topkk' at the top level; did you mean topk?" in typo.err


@pytest.mark.parametrize(
    "plugin,args",
    [
        ("optuna", ["hparams_search=wine_optuna"]),
        ("joblib", ["-m", "hydra/launcher=joblib", "trainer.epochs=1"]),
    ],
)
def test_a_plugin_that_is_not_installed_gets_the_pip_command(tmp_path, plugin, args):
    package, modules = PLUGINS[plugin]
    hidden = [package] + [f"{package}.{module}" for module in modules]
    code = (
        "import sys\n"
        f"for name in {hidden!r}: sys.modules[name] = None  # as if the plugin were not installed\n"
        f"sys.argv = ['dlrun', *{args!r}]\n"
        "from dlrun.cli import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and 'is not installed: pip install "dlrun[sweep]"' in lines[0], done.stderr


def test_the_sweep_table_says_why_a_job_failed(dlrun, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = dlrun("-m", "optimizer.lr=0.001,-1", "trainer.epochs=1", "terminal.progress=off")
    assert result.code == 1
    assert "job 1 failed: optimizer.lr=-1.0 is out of range: it must lie in (0, inf)" in result.out


def test_a_sweep_job_starts_with_its_settings_not_the_whole_tree(dlrun, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = dlrun("-m", "optimizer.lr=0.001,0.01", "trainer.epochs=1", "terminal.progress=off")
    assert result.code == 0, result.err
    assert "settings: optimizer.lr=0.001 trainer.epochs=1" in result.out
    assert "├──" not in result.out  # no config tree
    assert len(result.out.splitlines()) < 80  # two jobs and the table; the tree alone was ~75 a job

    full = dlrun(
        "-m", "optimizer.lr=0.001", "trainer.epochs=1", "terminal.config=full", "terminal.progress=off"
    )
    assert "├── optimizer (adam)" in full.out
    quiet = dlrun("trainer.epochs=1", "terminal.config=off")
    assert "├──" not in quiet.out and "settings:" not in quiet.out
    # a folder whose path takes the first line past the width: the path is still whole on it
    folder = tmp_path / ("a-folder-named-at-length-" + "x" * 60)
    single = dlrun("trainer.epochs=1", "optimizer.lr=0.01", "seed=3", run_dir=folder)
    tree = single.out[: single.out.index("device ")].splitlines()
    # a single run: each group's option and only what differs from its defaults
    assert tree[0] == f"config (every setting: terminal.config=full, or {folder / 'config.yaml'})"
    assert "├── optimizer (adam): lr=0.01" in tree and "├── model (mlp)" in tree
    assert "├── trainer (default): epochs=1 batch_size=8" in tree  # how long `auto` trains: always
    assert any(line.startswith("├── dataset (wine): path=") for line in tree)  # where the data is: always
    assert "└── seed=3" in tree and len(tree) == 9


def test_the_defaults_train_a_linear_model_on_the_wine_table(dlrun):
    # batches of 64 for 10 epochs gave these 106 rows 20 optimizer steps: 39 % for the linear model
    # (the default MLP: tests/test_cli.py, through the console script)
    result = dlrun("model=linear", "logger=none")
    assert result.code == 0, result.err
    assert result.metrics["test"]["acc"] >= 0.95
    assert result.metrics["steps"] >= 2000


def test_the_defaults_train_a_150_row_table(dlrun, tmp_path):
    table = datasets.write_iris_like(tmp_path / "iris.csv")
    result = dlrun("dataset=csv", f"dataset.path={table}", "dataset.label_column=species", "logger=none")
    assert result.code == 0, result.err
    assert result.metrics["test"]["acc"] >= 0.90  # was 33 %


def test_a_long_run_shows_a_row_every_few_epochs_and_logs_every_one(dlrun):
    result = dlrun("trainer.epochs=60", "trainer.limit_train_batches=1", "logger=none")
    assert result.code == 0, result.err
    rows = [line.split("|")[0].split()[1] for line in result.out.splitlines() if line.startswith("epoch ")]
    assert rows == ["1/60", *(f"{epoch}/60" for epoch in range(3, 61, 3))]
    assert "a row every 3 epochs" in result.out
    logged = (result.run_dir / "dlrun.log").read_text()
    assert all(f"epoch {epoch:>2}/60 |" in logged for epoch in range(1, 61))


def test_an_explicit_length_is_taken_as_typed(dlrun):
    result = dlrun("trainer.epochs=3", "trainer.batch_size=64", "logger=none")
    assert result.code == 0, result.err
    assert (result.metrics["epochs"], result.metrics["steps"]) == (3, 6)
    saved = (result.run_dir / "config.yaml").read_text()
    assert "epochs: 3" in saved and "batch_size: 64" in saved


def test_an_accuracy_tie_goes_to_the_epoch_with_the_lower_validation_loss():
    from dlrun.engine.state import Monitor

    monitor = Monitor("val/acc", "max")
    assert monitor.update(0.9, 1, loss=0.5)
    assert monitor.update(0.9, 2, loss=0.4)  # the same accuracy from a better-trained model
    assert not monitor.update(0.9, 3, loss=0.45)
    assert not monitor.update(0.8, 4, loss=0.1)
    assert (monitor.best, monitor.best_epoch) == (0.9, 2)


def test_help_lists_the_options_of_a_config_dir_given_on_the_command_line(tmp_path):
    (tmp_path / "mine" / "model").mkdir(parents=True)
    (tmp_path / "mine" / "model" / "ident.yaml").write_text("_target_: torch.nn.Identity\n")
    done = subprocess.run(
        [sys.executable, "-m", "dlrun", "--config-dir", "mine", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    models = next(line for line in done.stdout.splitlines() if line.startswith("model:"))
    assert "ident" in models and "mlp" in models
