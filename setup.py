"""Packaging of theano_lowmem.

Besides the package, the wheel carries ``theano_lowmem_startup.pth`` at the
root of site-packages: the interpreter start-up hook (see
``theano_lowmem/_startup.py``).  setuptools has no option for a top-level
``.pth``, so ``build_py`` copies it:

* regular wheel (``pip install .``): into ``build_lib``, whose root becomes
  site-packages (the way setuptools ships its own ``distutils-precedence.pth``);
* PEP 660 editable wheel (``pip install -e .``): ``build_lib`` is not packed
  then, but ``install_lib`` points at the unpacked editable wheel, whose files
  are all installed (setuptools/command/editable_wheel.py, ``_configure_build``).
"""
import os

from setuptools import Extension, find_packages, setup
from setuptools.command.build_py import build_py

PTH = "theano_lowmem_startup.pth"
HERE = os.path.dirname(os.path.abspath(__file__))


class build_py_with_pth(build_py):
    """``build_py`` that also ships the start-up ``.pth`` (see module docstring)."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            target = self.get_finalized_command("install").install_lib
        else:
            target = self.build_lib
        self.mkpath(target)
        self.copy_file(os.path.join(HERE, PTH), os.path.join(target, PTH), preserve_mode=0)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]


TEST = ["pytest>=8", "hypothesis>=6", "parameterized"]
PLOT = ["matplotlib"]
DOCS = ["mkdocs>=1.5"]

setup(
    name="theano_lowmem",
    version="0.1.0",
    description="Lower the peak memory of compiled Theano 1.0.5 functions without changing results",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["theano_lowmem", "theano_lowmem.*"]),
    python_requires=">=3.11",
    install_requires=[
        "theano==1.0.5",
        "numpy>=1.21,<1.24",      # Theano 1.0.5 uses numpy.distutils and old aliases
        "scipy>=1.9,<1.16",       # scipy 1.16+ needs numpy>=1.25
        "six",
    ],
    extras_require={"test": TEST, "plot": PLOT, "docs": DOCS, "all": TEST + PLOT + DOCS},
    # the short path of a cached signature's call (theano_lowmem/_callproxy.c); optional:
    # without a compiler it is not built, and callplan runs the same path in Python (one
    # warning, and reports say so)
    ext_modules=[Extension("theano_lowmem._callproxy", ["theano_lowmem/_callproxy.c"],
                           optional=True)],
    entry_points={"console_scripts": ["theano-lowmem = theano_lowmem.__main__:main"]},
    cmdclass={"build_py": build_py_with_pth},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Operating System :: POSIX :: Linux",
    ],
)
