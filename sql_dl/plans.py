"""The records the driver ships to tasks: a model's `ModelPlan`, and a `TrainingJob` with
the `TrainingResult` a task sends back. Small, frozen and picklable: no model, no session,
no data inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from sql_dl.manifest import PreprocessorSpec

__all__ = ["ModelPlan", "TrainingJob", "TrainingResult"]


@dataclass(frozen=True)
class ModelPlan:
    """Everything an executor needs to run one model, checked on the driver
    (`sql_dl.driver.models.plan_model`)."""

    name: str
    file: str  # local path on the driver, staged by name for the executors
    staged_name: str
    input: str
    input_shape: tuple[int, ...]
    output_size: int
    features_layer: str
    features_size: int
    preprocessor: PreprocessorSpec | None
    labels: tuple[tuple[str, str], ...] | None
    batch_size: int
    on_error: str
    source: str
    loader: Callable[[str], Any] | None = None  # URI -> the model's input, for tensor models
    sha256: str | None = None  # of ``file``, checked again on each executor (files only)
    trust_code: bool = False  # load Lambda layers and other code the model carries
    cache_key: str | None = None  # its outputs' key in the prediction cache; None: not cached
    cache_size: int = 0  # the prediction cache's bound, in bytes per executor
    engine: str = "keras"  # openvino: ``file`` is the converted IR directory
    precision: str = "float32"

    @property
    def loaded_key(self) -> str:
        """What a worker keeps the loaded model under: one converted OpenVINO file serves both
        precisions, each compiled apart."""
        if self.engine == "keras":
            return self.staged_name
        return f"{self.staged_name}#{self.precision}"


@dataclass(frozen=True)
class TrainingJob:
    """One model to train in one task (`sql_dl.executor.training.train`)."""

    index: int
    model_file: str
    staged_name: str
    data_dir: str
    input_shape: tuple[int, ...]
    output_size: int
    optimizer: str = "adam"
    loss: str = "categorical_crossentropy"
    fit_params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    trust_code: bool = False
    rows: int | None = None  # in the training set: tells Keras how many steps an epoch has


@dataclass(frozen=True)
class TrainingResult:
    """What a training task sends back."""

    index: int
    model: bytes  # the trained model as a .keras file
    history: dict[str, list[float]]
    pid: int  # the Python process that trained it
    seconds: float
