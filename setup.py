"""Only what pyproject.toml cannot say: copy the shipped data folders of the checkout into the
package when it is built, so that a wheel carries them (see src/convdistill/resources.py).

In the checkout (and in an editable install) the files are read where they are; nothing moves,
so `git log trainers/` and friends keep their history.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# The list of shipped files, from the one place that defines it; loaded by path, because
# importing the package would import its dependencies, which a build environment lacks.
_spec = importlib.util.spec_from_file_location("_resources", Path(__file__).parent / "src/convdistill/resources.py")
assert _spec is not None and _spec.loader is not None
resources = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(resources)


class build_py_with_shipped_data(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's files in place
        root = Path(__file__).parent
        target = Path(self.build_lib) / "convdistill" / resources.PACKAGED
        for folder, patterns in resources.SHIPPED.items():
            for pattern in patterns:
                for source in sorted((root / folder).glob(pattern)):
                    destination = target / folder / source.name
                    self.mkpath(str(destination.parent))
                    self.copy_file(str(source), str(destination))


setup(cmdclass={"build_py": build_py_with_shipped_data})
