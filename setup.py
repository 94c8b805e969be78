"""Everything is in setup.cfg; this builds the Spark extension jar (jvm/) with the package, so
that ``pip install .`` and ``pip install -e .`` both get it, and lets an install choose its
TensorFlow: ``SQL_DL_TENSORFLOW="tensorflow[and-cuda]"`` (GPU executors: docs/deployment.md)
replaces the default ``tensorflow-cpu`` requirement, version range kept."""

import configparser
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DEFAULT_TENSORFLOW = "tensorflow-cpu"


class BuildPyWithJar(build_py):
    def run(self):
        sys.path.insert(0, str(ROOT / "jvm"))
        from build_jar import build

        build()
        super().run()


def install_requires() -> list:
    """setup.cfg's requirements, with ``SQL_DL_TENSORFLOW`` for tensorflow-cpu if set."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    requires = [r.strip() for r in config["options"]["install_requires"].splitlines() if r.strip()]
    tensorflow = os.environ.get("SQL_DL_TENSORFLOW", DEFAULT_TENSORFLOW).strip()
    return [tensorflow + r[len(DEFAULT_TENSORFLOW):] if r.startswith(DEFAULT_TENSORFLOW + ">")
            else r for r in requires]


setup(cmdclass={"build_py": BuildPyWithJar}, install_requires=install_requires())
