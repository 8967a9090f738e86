"""Replicas of the orders Theano's virtual machines really execute (pure, ints only).

Theano's default C VM does *not* run ``fgraph.toposort()``.  ``CLazyLinker_call``
(``theano/gof/c_code/lazylinker_c.c``) calls ``lazy_rec_eval`` on each output
variable in turn; ``lazy_rec_eval(var)`` returns at once if ``var`` is computed
or has no owner, else it first evaluates the owner's prerequisites (the outputs
of the nodes ``fgraph.orderings()`` puts before it, as variable indices,
deduplicated and sorted), then each input of the owner in order, then runs the
owner.  The Python ``Stack`` VM (``theano/gof/vm.py``, ``Stack.__call__``) pops
nodes from a LIFO stack seeded with the outputs' owners.  ``Loop`` runs the
schedule as given.

These replicas take the same integer encoding the VMs build in
``VM_Linker.make_vm``; the Theano glue (``theano_lowmem.executed``) builds it.
Lazy nodes (``ifelse``) make the order depend on data and are not replicated.
"""
from __future__ import annotations

from typing import Callable, Sequence


def cvm_order(node_inputs: Sequence[Sequence[int]], node_outputs: Sequence[Sequence[int]],
              var_owner: Sequence[int], node_prereqs: Sequence[Sequence[int]],
              output_vars: Sequence[int]) -> list[int]:
    """Order in which the C VM runs the nodes (``lazy_rec_eval``, without lazy nodes).

    Parameters
    ----------
    node_inputs, node_outputs : sequences of sequences of int
        Variable indices read and written by each node.
    var_owner : sequence of int
        Node index producing each variable, ``-1`` for inputs and constants.
    node_prereqs : sequence of sequences of int
        Variable indices each node waits for besides its inputs (the outputs of
        its ``orderings()`` predecessors), sorted as ``make_vm`` sorts them.
    output_vars : sequence of int
        The function's output variables (returned outputs, then updates).

    Returns
    -------
    list of int
        Node indices in execution order.  Iterative (no recursion limit).

    Examples
    --------
    >>> # two independent branches a->b and c->d, outputs [b_out, d_out]
    >>> cvm_order([[0], [1], [0], [3]], [[1], [2], [3], [4]], [-1, 0, 1, 2, 3],
    ...           [[], [], [], []], [2, 4])
    [0, 1, 2, 3]
    """
    return cvm_walk(node_inputs, node_outputs, var_owner, lambda node, computed: node_prereqs[node],
                    output_vars)[0]


def cvm_walk(node_inputs: Sequence[Sequence[int]], node_outputs: Sequence[Sequence[int]],
             var_owner: Sequence[int],
             prereqs_of: Callable[[int, Sequence[bool]], Sequence[int]],
             output_vars: Sequence[int]) -> tuple[list[int], int]:
    """The C VM's walk (``lazy_rec_eval``, without lazy nodes): order and recursion depth.

    Same encoding as :func:`cvm_order`, except that a node's prerequisite
    variables come from ``prereqs_of(node, computed)``, called once, when the
    walk first enters the node (``computed[v]`` tells which variables are
    computed at that moment), and must be sorted as ``make_vm`` sorts them.

    Returns
    -------
    order : list of int
        Node indices in execution order.
    depth : int
        The deepest nesting of ``lazy_rec_eval`` calls on an uncomputed
        variable: how deep the C recursion goes (each level is one C stack frame).

    Examples
    --------
    >>> # b reads a; c is independent; outputs [b_out, c_out]; c waits for b
    >>> cvm_walk([[0], [1], [0]], [[1], [2], [3]], [-1, 0, 1, 2],
    ...          lambda n, computed: [2] if n == 2 else [], [2, 3])
    ([0, 1, 2], 2)
    """
    computed = [owner < 0 for owner in var_owner]
    order: list[int] = []
    depth = 0
    for out in output_vars:
        if computed[out]:
            continue
        # frame: [node, pending variables to evaluate first, next position]
        owner = var_owner[out]
        stack = [[owner, [*prereqs_of(owner, computed), *node_inputs[owner]], 0]]
        while stack:
            if len(stack) > depth:
                depth = len(stack)
            frame = stack[-1]
            pending, pos = frame[1], frame[2]
            n = len(pending)
            while pos < n and computed[pending[pos]]:
                pos += 1
            if pos < n:
                frame[2] = pos
                owner = var_owner[pending[pos]]
                stack.append([owner, [*prereqs_of(owner, computed), *node_inputs[owner]], 0])
                continue
            stack.pop()
            outs = node_outputs[frame[0]]
            for v in outs:
                if not computed[v]:
                    break
            else:
                continue                    # every output computed already
            order.append(frame[0])
            for v in outs:
                computed[v] = True
    return order, depth


def stack_order(node_inputs: Sequence[Sequence[int]], node_outputs: Sequence[Sequence[int]],
                var_owner: Sequence[int], node_prereqs: Sequence[Sequence[int]],
                output_vars: Sequence[int]) -> list[int]:
    """Order in which the Python ``Stack`` VM runs the nodes (non-lazy graphs).

    Same encoding as :func:`cvm_order`; ``node_prereqs`` are the
    ``destroy_dependencies`` (outputs of the ``orderings()`` predecessors, in
    ``orderings()`` order, not sorted).

    Examples
    --------
    >>> stack_order([[0], [1], [0], [3]], [[1], [2], [3], [4]], [-1, 0, 1, 2, 3],
    ...             [[], [], [], []], [2, 4])
    [2, 3, 0, 1]
    """
    computed = [owner < 0 for owner in var_owner]
    stack = [var_owner[v] for v in output_vars if var_owner[v] >= 0]   # base_apply_stack
    order: list[int] = []
    while stack:
        node = stack.pop()
        deps = list(node_inputs[node]) + list(node_prereqs[node])
        if all(computed[v] for v in node_outputs[node]):
            continue
        if all(computed[v] for v in deps):
            order.append(node)
            for v in node_outputs[node]:
                computed[v] = True
        else:
            stack.append(node)
            stack.extend(var_owner[v] for v in deps if var_owner[v] >= 0)
    return order
