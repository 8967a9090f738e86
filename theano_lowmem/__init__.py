"""theano_lowmem: lower the peak memory of Theano functions without changing their results.

Importing the package registers everything (idempotently):

* the ``lowmem`` optimizer pass in ``optdb`` and the ``fast_run+lowmem`` optimizer
  (``theano.Mode(optimizer='fast_run+lowmem')``, ``mode.including('lowmem')``);
* the sharing linkers ``cvm_lowmem``, ``cvm_lowmem_nogc``, ``vm_lowmem``, ``vm_lowmem_nogc``;
* the ``lowmem_*`` config flags; with ``lowmem_order=True`` every function
  compiled with the default mode gets the pass and the sharing linker.
"""
from . import _startup

_startup.prepare_environment()      # blas.ldflags default and the scan fix, before theano loads

import theano  # noqa: E402,F401  (after the environment is prepared)

from . import config  # noqa: E402

config.register_flags()

from . import opt, storage_reuse  # noqa: E402

opt.register()
storage_reuse.register()

from . import activate  # noqa: E402
from .executed import cvm_order, executed_order, trace_order  # noqa: E402
from .measure import measure_call  # noqa: E402
from .model import model_for, model_of_fgraph  # noqa: E402
from .opt import LowMemOpt, OrderFeature  # noqa: E402
from .report import Report, report  # noqa: E402
from .storage_reuse import LowMemLinker  # noqa: E402

activate.apply_flags()

__version__ = "0.1.0"
__all__ = ["LowMemLinker", "LowMemOpt", "OrderFeature", "Report", "activate", "cvm_order",
           "executed_order", "measure_call", "model_for", "model_of_fgraph", "report", "trace_order"]
