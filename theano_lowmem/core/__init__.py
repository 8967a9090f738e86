"""Pure algorithms of theano_lowmem: no Theano, no numpy.

``graph``: the graph model; ``memory``: the one definition of peak;
``schedule``: orders that minimise the peak; ``bufplan``: which buffers share a cell;
``executed``: the order Theano's VMs really run.
"""
from .graph import Graph, GraphError
from .memory import Lifetime, MemoryTrace, lifetimes, peak, simulate, keep_all_bytes

__all__ = ["Graph", "GraphError", "Lifetime", "MemoryTrace", "lifetimes", "peak", "simulate",
           "keep_all_bytes"]
