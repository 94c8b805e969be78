"""sql-dl demo end to end, offline: its per-label accuracy, computed in SQL, checked with Keras."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from test_images import keras_tensor


@pytest.mark.slow
def test_demo_runs_offline_and_its_sql_accuracy_matches_keras(tmp_path):
    import keras

    directory = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "sql_dl.cli", "demo", "--dir", str(directory),
         "--master", "local[2]", "--home", str(tmp_path / "home")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "SQL_DL_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert "held-out accuracy" in result.stderr

    lines = result.stdout.splitlines()
    start = lines.index("label\timages\taccuracy") + 1
    table = {label: (int(n), float(acc)) for label, n, acc in
             (line.split("\t") for line in lines[start:start + 10])}

    model = keras.saving.load_model(directory / "models" / "digits_cnn.keras")
    for label in map(str, range(10)):
        files = sorted((directory / "digits" / label).glob("*.png"))
        x = np.concatenate([keras_tensor(f, (32, 32), mode="scale") for f in files])
        accuracy = np.mean(model.predict(x, verbose=0).argmax(axis=1) == int(label))
        assert table[label] == (len(files), round(float(accuracy), 3))
    assert np.mean([acc for _, acc in table.values()]) > 0.9
