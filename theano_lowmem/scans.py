"""Scan inner functions: give them the lowmem pass and the sharing linker.

Scan compiles its inner function lazily, in ``Scan.make_thunk``
(scan_op.py:860-866), with its own mode (``Scan.__init__``:
``get_mode(self.mode).clone(link_kwargs=dict(allow_gc=self.allow_gc))``,
scan_op.py:174-186), not with the outer function's mode.
"""
from __future__ import annotations

import theano

OPT_NAME = "lowmem"


def _include_lowmem_in_scans(fgraph) -> None:
    """Scan compiles its inner function with its own mode (scan_op.py:174-186,
    860-866), not the outer one: add the pass there if not compiled yet."""
    from theano.scan_module.scan_op import Scan
    for node in fgraph.apply_nodes:
        op = node.op
        if isinstance(op, Scan) and not getattr(op, "fn", None):
            inner = op.mode_instance
            if isinstance(inner.provided_optimizer, theano.gof.Query) and \
                    OPT_NAME not in inner.provided_optimizer.include:
                op.mode_instance = inner.including(OPT_NAME)


def use_in_scans(fgraph, linker) -> None:
    """Give scan nodes whose inner function is not compiled yet a LowMemLinker too.

    Scan compiles its inner function in ``make_thunk`` (scan_op.py:860-866),
    which ``VM_Linker.make_all`` calls after this, with its own mode
    (``Scan.__init__``: ``get_mode(self.mode).clone(link_kwargs=dict(allow_gc=
    self.allow_gc))``, scan_op.py:174-186), not the outer function's.  Keep the
    inner mode's optimizer and the inner linker's arguments; only the class changes.
    """
    from theano.gof.vm import VM_Linker
    from theano.scan_module.scan_op import Scan
    from .activate import _linker_kwargs
    from .storage_reuse import LowMemLinker
    for node in fgraph.apply_nodes:
        op = node.op
        if not isinstance(op, Scan) or getattr(op, "fn", None):
            continue
        inner = op.mode_instance
        if isinstance(inner.linker, LowMemLinker) or not isinstance(inner.linker, VM_Linker):
            continue
        kwargs = _linker_kwargs(inner.linker)
        new = LowMemLinker(share=linker.share, check_plan=linker.check_plan,
                           share_by=linker.share_by, **kwargs)
        op.mode_instance = theano.Mode(linker=new, optimizer=inner.provided_optimizer)
