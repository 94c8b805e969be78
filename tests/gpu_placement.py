"""A device placement for machines without GPUs, for the tests of sql_dl.executor.devices: set
``SQL_DL_DEVICE_PLACEMENT=gpu_placement:record`` (with this folder on the executors'
PYTHONPATH) and ``SQL_DL_TEST_PLACEMENTS`` to a folder. Each call writes where sql_dl asked
to run, with the task Spark ran it in and the GPUs Spark assigned that task, then runs it on
the CPU."""

from __future__ import annotations

import json
import os

from pyspark import TaskContext


def record(device: str):
    import tensorflow as tf

    context = TaskContext.get()
    gpu = context.resources().get("gpu")
    line = {"pid": os.getpid(), "device": device,
            "task_gpus": list(gpu.addresses) if gpu is not None else [],
            "stage": context.stageId(), "partition": context.partitionId(),
            "attempt": context.taskAttemptId(),
            "phase": context.getLocalProperty("spark.jobGroup.id")}
    path = os.path.join(os.environ["SQL_DL_TEST_PLACEMENTS"], f"{os.getpid()}.jsonl")
    with open(path, "a") as records:
        records.write(json.dumps(line) + "\n")
    return tf.device("/CPU:0")
