"""What a new user meets first: errors that point at the fix (the closest valid name, the pip
command for a missing plugin), a sweep table that says why a job failed, and output worth reading
(a compact start for sweep jobs, progress lines in a log)."""

import subprocess
import sys

import pytest

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
    result = dlrun("-m", "optimizer.lr=0.001,-1", "trainer.epochs=1", "logger.progress=off")
    assert result.code == 1
    assert "job 1 failed: optimizer.lr=-1.0 is out of range: it must lie in (0, inf)" in result.out


def test_a_sweep_job_starts_with_its_settings_not_the_whole_tree(dlrun, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = dlrun("-m", "optimizer.lr=0.001,0.01", "trainer.epochs=1", "logger.progress=off")
    assert result.code == 0, result.err
    assert "settings: optimizer.lr=0.001 trainer.epochs=1" in result.out
    assert "├──" not in result.out  # no config tree
    assert len(result.out.splitlines()) < 80  # two jobs and the table; the tree alone was ~75 a job

    full = dlrun("-m", "optimizer.lr=0.001", "trainer.epochs=1", "logger.config=full", "logger.progress=off")
    assert "├── optimizer (adam)" in full.out
    quiet = dlrun("trainer.epochs=1", "logger.config=off")
    assert "├──" not in quiet.out and "settings:" not in quiet.out
    single = dlrun("trainer.epochs=1")
    assert "├── optimizer (adam)" in single.out  # a single run shows its tree
