"""`hydra/sweeper=dlrun_optuna`: Hydra's Optuna sweeper (hydra-optuna-sweeper) with a search that
survives. The study lives in a database (by default optuna.db, SQLite, in the sweep folder; any
SQLAlchemy URL by hydra.sweeper.storage), so a search stopped by a signal, a crash or a lost
machine continues when its command is run again, and several sweeper processes can share one
study: `n_trials` is the study's total, never run twice (dlrun/runs/optuna_search.py). Optuna is imported
only when a search starts: plugin discovery stays fast.
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

try:  # the sweep extra; without it hparams_search is not offered
    from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper as HydraOptunaSweeper
except ImportError:
    OptunaSweeperConf = HydraOptunaSweeper = object


@dataclass
class DlrunOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.dlrun_sweeper.optuna_sweeper.OptunaSweeper"
    n_jobs: int = 1  # trials launched at once by this process


class OptunaSweeper(HydraOptunaSweeper):
    def __init__(self, *args, **kwargs) -> None:
        from dlrun.runs.optuna_search import SurvivingSearch

        self.sweeper = SurvivingSearch(*args, **kwargs)


if OptunaSweeperConf is not object:
    ConfigStore.instance().store(
        group="hydra/sweeper", name="dlrun_optuna", node=DlrunOptunaSweeperConf, provider="dlrun"
    )
