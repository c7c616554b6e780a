"""The CSV table readers: the columnar one takes every plain file and gives exactly what the
checked one gives; whatever it does not take is read again by the checked one, which reads it
anyway or names the fault; the seeded splits never change."""

import sys

import pytest
import torch

from dlrun.data import LoadOptions
from dlrun.data.csv_checked import read_checked
from dlrun.data.csv_columnar import read_columnar
from dlrun.data.split import stratified_split
from dlrun.data.tabular import load_csv
from dlrun.errors import DataError
from tests import datasets


def both(path, label_column):
    return read_columnar(path, ",", label_column), read_checked(path, ",", label_column)


def assert_same(fast, checked):
    assert fast.header == checked.header and fast.label == checked.label
    assert fast.class_names == checked.class_names
    assert torch.equal(fast.labels, checked.labels)
    order = torch.randperm(len(checked.labels), generator=torch.Generator().manual_seed(0))
    assert torch.equal(fast.features_in(order), checked.features_in(order))


@pytest.mark.parametrize(
    "write, label_column",
    [
        (lambda path: datasets.write_csv(path), "kind"),
        (lambda path: datasets.write_csv(path, label_first=False), "kind"),
        (lambda path: datasets.write_csv(path, header=False), 0),
        (lambda path: datasets.write_csv(path, label_first=False), -1),
        (datasets.write_iris_like, "species"),
    ],
)
def test_a_plain_table_takes_the_columnar_path_and_reads_as_the_checked_reader_reads_it(
    tmp_path, write, label_column
):
    fast, checked = both(write(tmp_path / "t.csv"), label_column)
    assert fast is not None, "a plain file fell back to the slow reader"
    assert_same(fast, checked)


def test_labels_that_are_numbers_sort_as_numbers_and_padding_is_not_part_of_a_label(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(
        "a,label\n" + "".join(f"{i}.5, {label} \n" for i, label in enumerate([10, 2, 1, 2, 10, 1]))
    )
    fast, checked = both(path, "label")
    assert fast is not None and fast.class_names == ["1", "2", "10"]
    assert fast.labels.tolist() == [2, 1, 0, 1, 2, 0]
    assert_same(fast, checked)


def test_a_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path):
    path = datasets.write_csv(tmp_path / "t.csv")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    fast, checked = both(path, "kind")
    assert fast is not None and fast.header[0] == "kind"
    assert_same(fast, checked)


@pytest.mark.parametrize(
    "change",
    [
        lambda text: text.replace("\n", "\n,,,,\n", 3),  # rows of empty cells: skipped
        lambda text: "\n\n" + text,  # blank lines before the header
        lambda text: text.replace(",", ",  ", 7),  # padded cells
        lambda text: text.replace("class1,", "class1,1_0", 1),  # a number with an underscore
    ],
)
def test_a_valid_but_unusual_table_is_read_by_the_checked_reader(tmp_path, change):
    path = datasets.write_csv(tmp_path / "t.csv")
    plain = read_checked(path, ",", "kind")
    path.write_text(change(path.read_text()))
    checked = read_checked(path, ",", "kind")
    loaded = load_csv(**csv_config(path), options=load_options())
    assert len(checked.labels) == len(plain.labels)
    assert sum(len(split[1]) for split in (loaded.train, loaded.val, loaded.test)) == len(plain.labels)


@pytest.mark.parametrize(
    "lines, where",
    [
        (["z,0.7,0.8"], ":4: 3 cells, but line 1 has 4"),
        (["z,0.7,high,0.9"], ":4:3: 'high' is not a number"),
        (["z,0.7,0.8,nan"], ":4:4: 'nan' is not a finite number"),
        (["z,0.7,,0.9"], ":4:3: '' is not a number"),
        (["z,inf,0.8,0.9"], ":4:2: 'inf' is not a finite number"),
        (["z,1e39,0.8,0.9"], ":4:2: '1e39' is beyond float32's range"),
        ([",0.7,0.8,0.9"], ":4:1: the label cell is empty"),
        ([" ,0.7,0.8,0.9"], ":4:1: the label cell is empty"),
    ],
)
def test_a_fault_falls_back_to_the_checked_reader_which_names_it(tmp_path, lines, where):
    path = tmp_path / "table.csv"
    path.write_text("\n".join(["kind,a,b,c", "x,0.1,0.2,0.3", "y,0.4,0.5,0.6", *lines]) + "\n")
    assert read_columnar(path, ",", "kind") is None
    with pytest.raises(DataError) as error:
        load_csv(**csv_config(path), options=load_options())
    assert str(error.value).startswith(f"{path}{where}")


def test_a_late_fault_in_a_big_table_is_named_without_holding_the_cells_as_strings(tmp_path):
    """The checked reader keeps numbers, not a Python string per cell: naming a fault on the last
    line of a big table costs about its float32 size in memory, not ten times it."""
    import tracemalloc

    import numpy as np

    path = tmp_path / "big.csv"
    values = np.random.default_rng(0).normal(size=(30_000, 10)).astype(np.float32)
    np.savetxt(path, np.column_stack([values, np.arange(30_000) % 3]), delimiter=",", fmt="%.6g")
    with path.open("a") as file:
        file.write("0.1,0.2,high,0.4,0.5,0.6,0.7,0.8,0.9,1.0,2\n")
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r":30001:3: 'high' is not a number"):
            read_checked(path, ",", 10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * values.nbytes, (
        f"{peak / 2**20:.1f} MB to read {values.nbytes / 2**20:.1f} MB of numbers"
    )


def test_bytes_that_are_not_utf8_are_named_by_line_and_column(tmp_path):
    path = tmp_path / "table.csv"
    path.write_bytes(b"kind,a\nx,0.1\ny,\xe9.4\nx,0.2\n")
    assert read_columnar(path, ",", "kind") is None
    with pytest.raises(DataError, match=f"{path}:3:3: byte 0xe9 is not UTF-8"):
        load_csv(**csv_config(path), options=load_options())


def test_a_wrong_label_column_is_said_before_the_table_is_read(tmp_path):
    path = datasets.write_csv(tmp_path / "t.csv")
    with pytest.raises(DataError, match="'quality' is not a column of .*columns: kind, a, b, c, d"):
        read_columnar(path, ",", "quality")
    with pytest.raises(DataError, match="out of range .*5 columns"):
        read_columnar(path, ",", 5)


def test_the_splits_are_the_same_samples_as_in_every_earlier_version():
    labels = torch.tensor([2, 0, 1, 1, 0, 2, 2, 0, 1, 0, 0, 2, 1, 1, 0, 2, 2, 0, 1, 2])
    parts = stratified_split(labels, [0.2, 0.2], seed=7)
    # taken from the version before the one-byte-per-sample split (dlrun 0.x, commit c8cad47)
    assert [part.tolist() for part in parts] == [
        [14, 18, 19],
        [1, 2, 11],
        [0, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 15, 16, 17],
    ]


def test_the_splits_of_a_table_are_its_rows_standardized_with_the_training_statistics(tmp_path):
    path = datasets.write_csv(tmp_path / "t.csv", rows=90)
    table = read_checked(path, ",", "kind")
    everything = table.features_in(torch.arange(len(table.labels)))
    loaded = load_csv(**csv_config(path), options=load_options())
    val_rows, test_rows, train_rows = stratified_split(table.labels, [0.2, 0.2], seed=0)
    raw_train = everything[train_rows]
    mean, std = raw_train.mean(0), raw_train.std(0)
    for rows, (inputs, labels) in zip(
        (train_rows, val_rows, test_rows), (loaded.train, loaded.val, loaded.test)
    ):
        assert torch.equal(labels, table.labels[rows])
        assert torch.allclose(inputs, (everything[rows] - mean) / std, atol=1e-6)


def test_reading_a_table_does_not_import_pandas(tmp_path):
    pytest.importorskip("pandas")  # only where pandas is installed can it be imported by mistake
    import subprocess

    path = datasets.write_csv(tmp_path / "t.csv")
    code = (
        "import sys; from pathlib import Path; from dlrun.data.csv_columnar import read_columnar; "
        f"assert read_columnar(Path({str(path)!r}), ',', 'kind') is not None; "
        "print('pandas' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"  # pyarrow's to_numpy imports it: a fifth of a second


def csv_config(path):
    settings = {"delimiter": ",", "label_column": "kind", "val_fraction": 0.2, "test_fraction": 0.2}
    return {"path": str(path), "standardize": True, **settings}


def load_options():
    return LoadOptions("classification", 0, 8, None, torch.device("cpu"))


FREED = """
import sys
import numpy as np, pyarrow as pa, torch
from pathlib import Path
from dlrun.data.csv_columnar import read_columnar

pool = pa.default_memory_pool()
before = pool.bytes_allocated()
table = read_columnar(Path(sys.argv[1]), ",", 10)
held = pool.bytes_allocated() - before
features = table.features_in(torch.arange(60_000))
expected = np.loadtxt(sys.argv[1], delimiter=",", dtype=np.float32)[:, :10]
print(held, pool.bytes_allocated() - before, torch.equal(features, torch.from_numpy(expected)))
"""


def test_the_readers_blocks_are_freed_as_their_rows_reach_the_tensor(tmp_path):
    """A big table is never whole twice in memory: the reader's blocks (several, at 1 MB of text
    each) are freed while the tensor is filled, not when the run ends. Measured in a process of
    its own, as a run reads a table: in a pytest worker that has run other tests, the count was
    seen to keep the blocks until a later garbage collection (1 run in 3 under xdist)."""
    import subprocess
    import sys

    import numpy as np

    path = tmp_path / "big.csv"
    values = np.random.default_rng(0).normal(size=(60_000, 10)).astype(np.float32)
    np.savetxt(path, np.column_stack([values, np.arange(60_000) % 3]), delimiter=",", fmt="%.6g")
    measured = subprocess.run(
        [sys.executable, "-c", FREED, str(path)], capture_output=True, text=True, check=True
    )
    held, left, same = measured.stdout.split()
    assert int(held) >= values.nbytes  # the reader's blocks, until the tensor is made
    assert int(left) < int(held) / 20
    assert same == "True"  # and the rows are the file's


def test_a_delimiter_of_more_than_one_character_is_refused_in_one_line(tmp_path, dlrun):
    path = datasets.write_csv(tmp_path / "t.csv")
    result = dlrun("dataset=csv", f"dataset.path={path}", "dataset.delimiter=::")
    assert result.code == 2
    assert "dataset.delimiter='::' must be one character" in result.err


def test_a_table_split_by_another_separator_names_it_and_the_suggestion_works(dlrun, tmp_path):
    import shlex

    path = tmp_path / "tabs.csv"
    path.write_text("a\tb\tlabel\n" + "".join(f"{i}\t{i * 2}\t{i % 2}\n" for i in range(30)))
    settings = ["dataset=csv", f"dataset.path={path}", "dataset.label_column=label", "trainer=debug"]
    refused = dlrun(*settings)
    assert refused.code == 1 and "it looks separated by '\\t': add dataset.delimiter='\\t'" in refused.err
    suggestion = refused.err.strip().rsplit("add ", 1)[1]
    assert dlrun(*settings, *shlex.split(suggestion)).code == 0  # as a shell passes it on


def test_a_continuous_label_column_is_said_and_the_run_goes_on(dlrun, tmp_path):
    path = tmp_path / "prices.csv"
    # 40 prices, each in 4-5 of 178 rows: a number to predict, spelled as 40 classes
    path.write_text("a,b,price\n" + "".join(f"{i},{i % 7},{100 + (i % 40) * 1.5}\n" for i in range(178)))
    result = dlrun("dataset=csv", f"dataset.path={path}", "dataset.label_column=price", "trainer=debug")
    assert result.code == 0, result.err
    said = " ".join((result.out + result.err).split())  # the terminal folds long lines
    assert "dataset.label_column=price of" in said and "holds 40 different values in 178 rows" in said
    assert "a number to predict rather than classes?" in said
    wine = dlrun("trainer=debug")  # 3 classes in 178 rows: nothing said
    assert "different values" not in wine.out + wine.err


def test_classes_too_small_for_the_validation_share_say_the_fraction_that_works(dlrun, tmp_path):
    import shlex

    path = tmp_path / "pairs.csv"  # 15 classes of 2 rows: a fifth of 2 rows rounds to none
    path.write_text("a,b,label\n" + "".join(f"{i},{i + 1},{i // 2}\n" for i in range(30)))
    settings = ["dataset=csv", f"dataset.path={path}", "dataset.label_column=label", "trainer=debug"]
    refused = dlrun(*settings)
    assert refused.code == 1, refused.err
    assert "dataset.val_fraction=0.2 leaves no validation rows" in refused.err
    assert "the largest of the 15 classes has 2 rows; set dataset.val_fraction=0.26 or more" in refused.err
    suggestion = refused.err.strip().rsplit("set ", 1)[1].split()[0]
    assert dlrun(*settings, *shlex.split(suggestion)).code == 0
    squeezed = dlrun(*settings, "dataset.val_fraction=0.5", "dataset.test_fraction=0.4")
    assert "dataset.val_fraction=0.5 and dataset.test_fraction=0.4 leave no training rows" in squeezed.err
