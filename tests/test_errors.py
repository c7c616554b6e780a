"""Bad input: one line on stderr that says what, where and how to fix, and a non-zero exit."""

import re

import pytest
import torch

from tests.helpers import FEW_STEPS


def one_error_line(result) -> str:
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("dlrun: error: ")
    return lines[0]


def test_an_unknown_option_lists_the_valid_ones(dlrun):
    result = dlrun("model=transformer")
    assert result.code == 2
    line = one_error_line(result)
    assert "model/transformer" in line
    for option in ("mlp", "cnn", "lenet", "linear"):
        assert option in line


def test_missing_mnist_files_name_the_folder_and_the_fix(dlrun, tmp_path):
    empty = tmp_path / "nothing-here"
    result = dlrun("dataset=mnist", f"dataset.root={empty}", "dataset.download=false")
    assert result.code == 1
    line = one_error_line(result)
    assert str(empty / "MNIST" / "raw") in line
    assert "dataset.download=true" in line and "train-images-idx3-ubyte" in line


def test_a_run_refused_at_start_leaves_no_folder_behind(dlrun, tmp_path):
    result = dlrun("dataset=mnist", f"dataset.root={tmp_path / 'none'}", "dataset.download=false")
    assert result.code == 1 and "not readable" in result.err
    assert not result.run_dir.exists()  # it held only Hydra's record, the lock and the log
    refused = dlrun("optimizer.lr=0")
    assert refused.code == 2 and not refused.run_dir.exists()
    # a run that fails once it trains keeps its folder and the reason: test_safeguards.py


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_a_gpu_that_is_not_there(dlrun):
    result = dlrun("trainer.device=cuda", *FEW_STEPS)
    assert result.code == 2
    assert "trainer.device=auto" in one_error_line(result)


def test_a_monitor_the_task_does_not_measure(dlrun):
    result = dlrun("trainer.monitor=val/mse")
    assert result.code == 2
    assert "val/acc" in one_error_line(result)


def test_a_resolver_without_its_argument_names_it_and_the_example_works(dlrun, tmp_path):
    typed = f"hydra.run.dir={tmp_path}/runs/${{now:}}"
    refused = dlrun(typed, "trainer=debug")
    assert refused.code == 2
    assert refused.err.startswith(f"dlrun: error: {typed}: the resolver now needs its argument ('pattern')")
    example = refused.err.strip().rsplit("as in ", 1)[1]
    ran = dlrun(typed.replace("${now:}", example), "trainer=debug")
    assert ran.code == 0, ran.err
    (made,) = (tmp_path / "runs").iterdir()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", made.name) and (made / "config.yaml").is_file()


def test_a_resolver_that_does_not_exist_suggests_the_closest(dlrun):
    refused = dlrun("trainer.epochs=${nwo:%H}")
    assert refused.code == 2
    assert (
        "no resolver named 'nwo' (a dot, as in ${trainer.epochs}, reads a setting); did you mean now?"
        in refused.err
    )
