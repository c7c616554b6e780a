"""MLflow: each dlrun run is an MLflow run, with its settings as params, its curves as metrics, and
its config.yaml and best.pt as artifacts. `logger=mlflow`, or with others:
`logger=[tensorboard,mlflow]`; needs `pip install "dlrun[mlflow]"`.

The tracking URI is MLflow's own unless `logger.mlflow.tracking_uri` names one: $MLFLOW_TRACKING_URI,
else MLflow's default for the folder dlrun starts in (`sqlite:///mlflow.db`, artifacts in
./mlruns), which `mlflow ui` started there shows. A resumed run continues the same MLflow run
(its id is kept in the run folder).
"""

import logging
import time
from typing import Any, Optional

from dlrun.errors import ConfigError
from dlrun.reporting.sinks import Epoch, Finished, Sink, Started
from dlrun.runs.folder import RunFolder

INSTALL = 'pip install "dlrun[mlflow]" (or, in a checkout, pip install -e ".[mlflow]")'
PARAM_LENGTH = 500  # MLflow keeps params short; a long list is cut, the whole config is an artifact


class MLflowSink(Sink):
    def __init__(
        self,
        run_folder: RunFolder,
        tracking_uri: Optional[str] = None,
        experiment: str = "dlrun",
        artifacts: bool = True,
    ):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError(f"logger=mlflow needs MLflow, which is not installed: {INSTALL}") from None
        # its database set-up says INFO lines on every first use; dlrun says what matters itself
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self.folder, self.experiment, self.artifacts = run_folder, experiment, artifacts
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id: Optional[str] = None
        self.status = "FAILED"  # until the run finishes; a stop signal makes it KILLED

    def start(self, resumed_at: Optional[int]) -> None:
        known = self.folder.mlflow_run.read_text().strip() if self.folder.mlflow_run.is_file() else None
        if resumed_at is not None and known:
            self.run_id = known
            self.client.update_run(known, status="RUNNING")
            return
        found = self.client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(self.experiment)
        tags = {"dlrun.run_folder": str(self.folder.path.resolve())}
        run = self.client.create_run(experiment_id, run_name=self.folder.name, tags=tags)
        self.run_id = run.info.run_id
        self.folder.mlflow_run.write_text(self.run_id + "\n")

    def run_started(self, started: Started) -> None:
        from mlflow.entities import Param

        params = [Param(key, _param(value)) for key, value in _flat(started.config).items()]
        for first in range(0, len(params), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(self.run_id, params=params[first : first + 100])

    def logged(self, step: int, values: dict[str, float]) -> None:
        self._metrics(step, values)

    def epoch_ended(self, epoch: Epoch) -> None:
        self._metrics(epoch.step, epoch.scalars)

    def finished(self, run: Finished) -> None:
        step = run.results["steps"]
        final = {f"{run.split}/{name}": value for name, value in run.results[run.split].items()}
        self._metrics(step, {f"best_{run.results['monitor']}": run.results["best_value"], **final})
        if self.artifacts:
            for path in (self.folder.config, self.folder.results, self.folder.best):
                if path.is_file():
                    self.client.log_artifact(self.run_id, str(path))
        self.status = "FINISHED"

    def stopped(self) -> None:
        self.status = "KILLED"

    def close(self) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=self.status)
            self.run_id = None

    def _metrics(self, step: int, values: dict[str, Optional[float]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in values.items() if value is not None]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """model.hidden_sizes -> [64, 32]; the data's facts are not settings and stay out."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if name == "facts":
            continue
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= PARAM_LENGTH else text[: PARAM_LENGTH - 3] + "..."
