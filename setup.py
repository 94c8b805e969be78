"""Everything is in setup.cfg; this only builds the Spark extension jar (jvm/) with the
package, so that ``pip install .`` and ``pip install -e .`` both get it."""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithJar(build_py):
    def run(self):
        sys.path.insert(0, str(Path(__file__).resolve().parent / "jvm"))
        from build_jar import build

        build()
        super().run()


setup(cmdclass={"build_py": BuildPyWithJar})
