"""``sql-dl train``: a classification head on a registered model's features, for an image
view's labels, trained in a Spark task and published as a new model of the manifest."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sql_dl.driver.models import plan_model
from sql_dl.driver.publish import publish
from sql_dl.driver.registration import bootstrap
from sql_dl.driver.training import remove, run_jobs, staging_dir, write_training_set
from sql_dl.errors import ManifestError
from sql_dl.executor.loading import load_keras_model
from sql_dl.manifest import Manifest, load_manifest
from sql_dl.plans import ModelPlan, TrainingJob
from sql_dl.spark.backends import backend_for
from sql_dl.sql_text import identifier, string_literal

__all__ = ["TransferReport", "train_head"]


@dataclass(frozen=True)
class TransferReport:
    model_file: Path
    labels: list[str]
    train_rows: int
    held_out_rows: int
    held_out_accuracy: float | None
    history: dict[str, list[float]]


def train_head(spark, manifest: str | os.PathLike, base: str, view: str, out: str | os.PathLike,
               register: str, *, epochs: int = 20, batch_size: int = 32,
               learning_rate: float = 0.001, held_out: float = 0.2, seed: int = 0,
               replace: bool = False) -> TransferReport:
    """Trains ``Dense(softmax)`` on ``<base>_features(image)`` for ``view``'s labels.

    Rows are split by a hash of the path and ``seed``: ``held_out`` of them (in (0, 1), as
    ``sql-dl train`` checks before Spark starts) are kept out of training and scored after
    publishing, through the new model's SQL function. The model
    written to ``out`` is the base up to its features layer plus the head, so it takes images
    as the base does; it is added to ``manifest`` as ``register`` with the base's
    preprocessing and the view's labels.

    Raises:
        ManifestError: ``base`` or ``view`` is not in the manifest, or the view has fewer than
            two labels.
    """
    loaded = bootstrap(spark, manifest)
    for kind, name, known in (("models", base, loaded.models), ("images", view, loaded.images)):
        if name not in known:
            raise ManifestError(f"{manifest}: no {kind} entry {name!r}; give one of "
                                f"{', '.join(known) or 'none'}. Received: {name!r}")
    plan = plan_model(loaded.models[base], loaded, backend_for(spark).fetch)
    labels = _labels(spark, manifest, view)
    kept_out = f"pmod(xxhash64(path, {int(seed)}), 1000) < {round(held_out * 1000)}"
    names = ", ".join(string_literal(label) for label in labels)
    one_hot = (f"transform(sequence(1, {len(labels)}), "
               f"i -> CAST(i = array_position(array({names}), label) AS FLOAT))")
    features = loaded.models[base].function_names[1]
    frame = spark.sql(f"SELECT {identifier(features)}(image) AS x, {one_hot} AS y "
                      f"FROM {identifier(view)} WHERE label IS NOT NULL AND NOT {kept_out}")
    with tempfile.TemporaryDirectory(prefix="sql_dl-head-") as directory:
        rows, result, head = _train(spark, frame, plan, register, len(labels), Path(directory),
                                    epochs=epochs, batch_size=batch_size,
                                    learning_rate=learning_rate, seed=seed)
    model_file = _publish(spark, loaded, manifest, plan, head, register, labels, out, replace)
    score = spark.sql(f"SELECT count(*) AS n, avg(CAST({identifier(register + '_top_k')}(image, 1)"
                      f"[0].class = label AS DOUBLE)) AS accuracy FROM {identifier(view)} "
                      f"WHERE label IS NOT NULL AND {kept_out}").first()
    return TransferReport(model_file, labels, rows, score.n, score.accuracy, result.history)


def _labels(spark, manifest, view: str) -> list[str]:
    """The view's distinct labels, at least two."""
    labels = [r.label for r in spark.sql(f"SELECT DISTINCT label FROM {identifier(view)} WHERE "
                                         "label IS NOT NULL ORDER BY label").collect()]
    if len(labels) < 2:
        raise ManifestError(f"{manifest}: images.{view}: a classifier needs at least two labels "
                            f"(parent folder names); give a folder of one folder per class. "
                            f"Received: labels={labels}")
    return labels


def _train(spark, frame, plan: ModelPlan, register: str, classes: int, directory: Path, *,
           epochs: int, batch_size: int, learning_rate: float, seed: int):
    """Trains a new head on ``frame``'s ``x`` (features) and ``y`` (one-hot) in a Spark task;
    returns the training rows, the task's result and the trained head."""
    import keras  # lazy: TensorFlow is heavy

    keras.utils.set_random_seed(seed)
    head = keras.Sequential([keras.Input((plan.features_size,)),
                             keras.layers.Dense(classes, activation="softmax", name="head")],
                            name=f"{register}_head")
    head_file = directory / "head.keras"
    head.save(head_file)
    name = backend_for(spark).ship(str(head_file))
    data_dir = staging_dir(spark, None)
    try:
        rows = write_training_set(frame, data_dir)
        job = TrainingJob(index=0, model_file=str(head_file), staged_name=name,
                          data_dir=data_dir, input_shape=(plan.features_size,),
                          output_size=classes, seed=seed, rows=rows,
                          fit_params={"epochs": epochs, "batch_size": batch_size,
                                      "learning_rate": learning_rate})
        (result,) = run_jobs(spark, [job])
    finally:
        remove(data_dir, spark)
    trained_file = directory / "trained.keras"
    trained_file.write_bytes(result.model)
    return rows, result, keras.saving.load_model(trained_file)


def _publish(spark, loaded: Manifest, manifest, plan: ModelPlan, head, register: str,
             labels: list[str], out, replace: bool) -> Path:
    """Publishes base (up to its features layer) + ``head`` as ``register`` and registers
    it in the session, beside what is there."""
    import keras  # lazy: TensorFlow is heavy

    spec = loaded.models[plan.name]
    model = load_keras_model(plan.file, spec.trust_code)
    output = model.get_layer(plan.features_layer).output
    if len(output.shape) > 2:
        output = keras.layers.Flatten()(output)
    full = keras.Model(model.inputs, head(output), name=register)
    preprocessor = spec.preprocessor or {
        "size": list(plan.preprocessor.size), "mode": plan.preprocessor.mode,
        "interpolation": plan.preprocessor.interpolation}
    model_file = publish(full, manifest, register, preprocessor=preprocessor, labels=labels,
                         path=out, replace=replace)
    published = load_manifest(manifest)
    bootstrap(spark, dataclasses.replace(published, models={register: published.models[register]},
                                         images={}), replace=False)
    return model_file
