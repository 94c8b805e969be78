"""Params, checks and persistence shared by sql_dl's Spark ML stages (internal).

Values are checked with the manifest's own rules (`sql_dl.manifest`), so a Param and the
manifest key it mirrors accept exactly the same values.
"""

from __future__ import annotations

from typing import Any

from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter

from sql_dl.driver.models import plan_model
from sql_dl.errors import FunctionArgumentError
from sql_dl.manifest import Manifest, ModelSpec
from sql_dl.rules import choice_problem, positive_int_problem, received
from sql_dl.spark.backends import backend_for

OUTPUT_MODES = ("vector", "array")


def check(owner: str, name: str, value: Any, problem: str | None) -> Any:
    """``value``, or a `FunctionArgumentError` ``<owner>: <name> <problem>. Received:
    <name>=<value>``."""
    if problem is not None:
        raise FunctionArgumentError(f"{owner}: {name} {problem}. {received(name, value)}")
    return value


class OptionalParams(Params):
    def _optional(self, param: Param | str) -> Any:
        """The Param's value, or None when it is neither set nor defaulted."""
        return self.getOrDefault(param) if self.isDefined(param) else None

    def _checked(self, param: Param | str, problem) -> Any:
        """The Param's value (or None), checked by ``problem(value) -> str | None``."""
        name = param if isinstance(param, str) else param.name
        value = self._optional(name)
        return check(type(self).__name__, name, value, problem(value))


def with_vector_column(dataset, name: str, array):
    """Adds ``array`` (array<float>) as the dense-vector column ``name``; NULL stays NULL."""
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    dataset = dataset.withColumn(name, array)
    return dataset.withColumn(name, F.when(F.col(name).isNotNull(), array_to_vector(F.col(name))))


def shipped_plan(stage, dataset, spec: ModelSpec, manifest: Manifest):
    """The model's plan, checked on the driver and shipped once per distinct setting."""
    cache = stage.__dict__.setdefault("_plans", {})
    if spec not in cache:
        backend = backend_for(dataset.sparkSession)
        plan = plan_model(spec, manifest, backend.fetch)
        backend.ship_model(plan)
        cache[spec] = plan
    return cache[spec]


class KerasFileParams(HasInputCol, HasOutputCol, OptionalParams):
    modelFile = Param(Params._dummy(), "modelFile", "a .keras/.h5 file or SavedModel directory",
                      typeConverter=TypeConverters.toString)
    batchSize = Param(Params._dummy(), "batchSize", "rows per model call",
                      typeConverter=TypeConverters.toInt)

    def __init__(self):
        super().__init__()
        self._setDefault(batchSize=32)

    def _tensor_plan(self, dataset, on_error: str = "null"):
        name = type(self).__name__
        model_file = self._checked(self.modelFile, lambda v: "is required" if v is None else None)
        spec = ModelSpec(name="modelFile", path=model_file, input="tensor",
                         batch_size=self._checked(self.batchSize, positive_int_problem),
                         on_error=on_error)
        return shipped_plan(self, dataset, spec, Manifest(source=name, models={spec.name: spec}))


class ImageLoaderParams(KerasFileParams):
    """The Params of models that read images through the user's ``imageLoader``."""

    imageLoader = Param(Params._dummy(), "imageLoader",
                        "a Python function uri -> ndarray giving the model's input")
    outputMode = Param(Params._dummy(), "outputMode", "vector (pyspark.ml dense vectors) or array",
                       typeConverter=TypeConverters.toString)

    def __init__(self):
        super().__init__()
        self._setDefault(outputMode="vector")

    def _image_loader(self):
        """The ``imageLoader`` Param, checked to be a function."""
        return self._checked(self.imageLoader, lambda v: None if callable(v) else
                             "must be a function uri -> ndarray")

    def _output_mode(self) -> str:
        return self._checked(self.outputMode, lambda v: choice_problem(v, OUTPUT_MODES))


_LOADER_DIR = "imageLoader"


class LoaderWriter(DefaultParamsWriter):
    """Saves the Params as JSON and ``imageLoader`` with cloudpickle beside them."""

    def saveImpl(self, path: str) -> None:
        from pyspark import cloudpickle

        params = {p.name: v for p, v in self.instance._paramMap.items() if p.name != _LOADER_DIR}
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sc, paramMap=params)
        loader = self.instance._optional(self.instance.imageLoader)
        self.sc.parallelize([cloudpickle.dumps(loader)], 1).saveAsPickleFile(f"{path}/{_LOADER_DIR}")


class LoaderReader(DefaultParamsReader):
    def load(self, path: str):
        from pyspark import cloudpickle

        instance = super().load(path)
        loader = cloudpickle.loads(self.sc.pickleFile(f"{path}/{_LOADER_DIR}").first())
        if loader is not None:
            instance._set(imageLoader=loader)
        return instance
