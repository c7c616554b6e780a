"""Where each file of a run lives; every other module asks here instead of spelling a path.

    <run>/
      .hydra/               Hydra's record of the composed config (a resume adds resumed-<time>/)
      .dlrun.lock           the one writer's lock (runs/lock.py)
      config.yaml           the resolved config the run used, with the data's facts
      dlrun.log             everything printed, plus warnings and errors
      error.txt             why the run failed (gone once a resume finishes it)
      metrics.json          the results of a finished run (runs/results.py)
      checkpoints/last.pt   every epoch (and every trainer.checkpoint_every_n_steps)
      checkpoints/best.pt   when the monitored metric improves
      events.out.tfevents.*             logger=tensorboard
      steps.csv, epochs.csv             logger=csv
      .mlflow_run                       logger=mlflow: the id of the MLflow run it logs to
"""

from pathlib import Path
from typing import Optional

# the Hydra folder of a process above rank 0 (torchrun, or a SLURM task): a scratch folder in the
# temporary folder, named with this prefix, removed when the process ends (engine/distributed.py)
SCRATCH_PREFIX = "dlrun-torchrun-"

LOCK = ".dlrun.lock"
LOG = "dlrun.log"  # also named in configs/hydra/job_logging/dlrun.yaml, which Hydra reads
RECORD = ".hydra"


class RunFolder:
    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def results(self) -> Path:
        return self.path / "metrics.json"

    @property
    def error(self) -> Path:
        return self.path / "error.txt"

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def log(self) -> Path:
        return self.path / LOG

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    @property
    def steps_csv(self) -> Path:
        return self.path / "steps.csv"  # logger=csv: each logging interval

    @property
    def epochs_csv(self) -> Path:
        return self.path / "epochs.csv"  # logger=csv: each epoch

    @property
    def mlflow_run(self) -> Path:
        return self.path / ".mlflow_run"  # logger=mlflow: the MLflow run a resume continues

    @property
    def hydra_record(self) -> Path:
        return self.path / RECORD / "hydra.yaml"

    def finished(self) -> bool:
        return self.results.is_file()

    def trained(self) -> Optional[str]:
        """What shows that the folder holds a run that trained (its results or a checkpoint), or None."""
        if self.finished():
            return self.results.name
        found = sorted(self.checkpoints.glob("*.pt")) if self.checkpoints.is_dir() else []
        return f"{self.checkpoints.name}/{found[0].name}" if found else None

    def only_started(self) -> bool:
        """Whether the folder holds only what a run writes before anything can refuse it: Hydra's
        record, the lock and the log (config.yaml, checkpoints and events come later)."""
        return self.path.is_dir() and {entry.name for entry in self.path.iterdir()} <= {RECORD, LOCK, LOG}

    def record_error(self, text: str) -> None:
        """Why the run failed, beside whatever it wrote; a disk that refuses even this leaves none."""
        try:
            self.error.write_text(text.rstrip() + "\n")
        except OSError:  # the disk that failed the run: the error line on the terminal is what counts
            self.error.unlink(missing_ok=True)


def of_checkpoint(path) -> Path:
    """The run folder a checkpoint (or a folder) given as `trainer.resume` belongs to."""
    path = Path(path).expanduser()
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def checkpoint_to_resume(resume: Optional[str], folder: RunFolder) -> Optional[Path]:
    """The checkpoint `trainer.resume` points at: a file, a run folder, `last` (inside a run
    folder), or `auto`: the folder's last.pt when there is one, else none (start fresh)."""
    if resume is None:
        return None
    if resume == "auto":
        return folder.last if folder.last.is_file() else None
    if resume == "last":
        return folder.last
    path = Path(resume).expanduser()
    return RunFolder(path).last if path.is_dir() and RunFolder(path).checkpoints.is_dir() else path

