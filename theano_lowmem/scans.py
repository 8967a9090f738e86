"""Scan inner functions: give them the lowmem pass and the sharing linker.

Scan compiles its inner function lazily, in ``Scan.make_thunk``
(scan_op.py:858-866: only if the op has no ``fn`` yet, so every later thunk of
the same op object reuses it), with its own mode (``Scan.__init__``:
``get_mode(self.mode).clone(link_kwargs=dict(allow_gc=self.allow_gc))``,
scan_op.py:174-184), not with the outer function's mode.

The op object can be the user's: ``Apply.clone`` keeps the op instance
(graph.py:192-209, ``Apply.clone``), so a graph compiled without scan rewrites (e.g.
``fast_compile``) holds the very Scan op of the user's symbolic graph.  Setting
``mode_instance`` on it would decide the inner mode of every later function
compiled from that graph, stock ones included.  So a compiled function gets a
*private* Scan op: a shallow copy (equal and of equal hash: ``Scan.__eq__`` and
``__hash__``, scan_op.py:637-706, read neither the mode nor ``fn``) with its
own ``mode_instance`` and no compiled inner function.
"""
from __future__ import annotations

import copy

import theano

OPT_NAME = "lowmem"


def private_scan_op(op, mode_instance):
    """A copy of Scan ``op`` that compiles its inner function with ``mode_instance``.

    The user's op is not modified.  The copy shares the inner graph (Scan
    compiles a clone of it, through ``theano.function``) and drops a compiled
    inner function ``fn`` that the original may carry.
    """
    new = copy.copy(op)
    new.__dict__.pop("fn", None)
    new.mode_instance = mode_instance
    return new


def _include_lowmem_in_scans(fgraph) -> None:
    """Scan compiles its inner function with its own mode (scan_op.py:174-184,
    858-866), not the outer one: add the pass there.

    The scan node is replaced (``replace_all_validate``) by one whose op is a
    :func:`private_scan_op`; the user's op keeps its mode.
    """
    from theano.scan_module.scan_op import Scan
    private: dict = {}          # one copy per op object, as Theano compiles one inner fn per op
    for node in list(fgraph.apply_nodes):
        op = node.op
        if not isinstance(op, Scan):
            continue
        inner = op.mode_instance
        if not isinstance(inner.provided_optimizer, theano.gof.Query) or \
                OPT_NAME in inner.provided_optimizer.include:
            continue
        if id(op) not in private:
            private[id(op)] = private_scan_op(op, inner.including(OPT_NAME))
        new_op = private[id(op)]
        new_node = theano.Apply(new_op, list(node.inputs), [o.clone() for o in node.outputs])
        fgraph.replace_all_validate(list(zip(node.outputs, new_node.outputs)),
                                    reason="lowmem: private scan op with the pass inside")


def linker_kwargs(linker) -> dict:
    """Constructor arguments of a ``VM_Linker`` (gof/vm.py:730-749)."""
    kw = {k: getattr(linker, k) for k in ("allow_gc", "use_cloop", "callback", "callback_input",
                                          "lazy", "c_thunks", "allow_partial_eval")}
    if "schedule" in vars(linker):   # only stored when given
        kw["schedule"] = linker.schedule
    return kw


def use_in_scans(fgraph, linker) -> None:
    """Give scan nodes a LowMemLinker for their inner function too.

    Scan compiles its inner function in ``make_thunk`` (scan_op.py:858-866),
    which ``VM_Linker.make_all`` calls after this, with its own mode, not the
    outer function's.  Keep the inner mode's optimizer and the inner linker's
    arguments; only the class changes.  The node gets a :func:`private_scan_op`
    in place (``node.op`` of *this* graph: at link time a replacement node would
    change variables that ``accept`` already recorded, e.g. ``no_recycling``);
    the op it had, possibly the user's, is not modified.
    """
    from theano.gof.vm import VM_Linker
    from theano.scan_module.scan_op import Scan
    cls = type(linker)          # LowMemLinker (or a subclass): no import of storage_reuse
    private: dict = {}
    for node in fgraph.apply_nodes:
        op = node.op
        if not isinstance(op, Scan):
            continue
        inner = op.mode_instance
        if isinstance(inner.linker, cls) or not isinstance(inner.linker, VM_Linker):
            continue
        if id(op) not in private:
            kwargs = linker_kwargs(inner.linker)
            # With config.allow_gc on, Scan calls Function.free() on its inner function
            # after every run (scan_op.py:958-967), which empties every cell: an arena
            # there would be made again at every run (or held unseen between runs), for
            # a few packed bytes; its ops reuse their outputs across the steps anyway.
            if theano.config.allow_gc and not getattr(op, "allow_gc", True):
                kwargs["arena"] = "off"
            new = cls(share=linker.share, check_plan=linker.check_plan,
                      share_by=linker.share_by, **kwargs)
            private[id(op)] = private_scan_op(
                op, theano.Mode(linker=new, optimizer=inner.provided_optimizer))
        node.op = private[id(op)]
