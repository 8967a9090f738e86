"""The fewest prerequisites that make Theano's C VM run a given order (pure, ints only).

A full chain (every node waits for the one before it) makes the C VM run any
order, but ``lazy_rec_eval`` (``theano/gof/c_code/lazylinker_c.c``) is
recursive: with a chain, evaluating the last node recurses through the
prerequisite of every node before it, one C stack frame per node.  Most chain
links are implied by the walk itself, because the C VM visits a node's
prerequisites, then its inputs, depth-first from the outputs
(:func:`theano_lowmem.core.executed.cvm_walk`).

:func:`cvm_prereqs` simulates that walk towards the planned order ``P`` and
decides, when the walk first enters a node ``P[j]``, whether it needs
``P[j-1]`` as a prerequisite: only if ``P[j-1]`` has not run yet and is not
already one of its dependencies (an input's owner or a fixed prerequisite).

Why that suffices (induction on ``j``): the nodes run so far are always a
prefix ``P[:k]`` of the plan, and every dependency of ``P[j]`` comes earlier
in ``P``.  Entering ``P[j]`` with ``P[:k]`` done, evaluating each dependency
``P[m]`` that is not done runs exactly ``P[k'..m]`` (``k'`` the prefix length
at that moment), so the dependencies together run ``P[k..d]`` with ``d`` the
latest dependency; ``P[j]`` runs next, at the right place, iff ``d == j - 1``,
which the added prerequisite guarantees.  Each added prerequisite is needed:
without it the walk inside ``P[j]`` only reaches nodes before ``P[j-1]``, so
the set is minimal (no edge can be dropped), though not necessarily the
smallest possible.
"""
from __future__ import annotations

from typing import Sequence

from .executed import cvm_walk


def cvm_prereqs(order: Sequence[int], node_inputs: Sequence[Sequence[int]],
                node_outputs: Sequence[Sequence[int]], var_owner: Sequence[int],
                node_prereqs: Sequence[Sequence[int]],
                output_vars: Sequence[int]) -> tuple[list[int], list[int], int]:
    """Prerequisites to add so that the C VM runs exactly ``order``.

    Parameters
    ----------
    order : sequence of int
        The planned order: every node once, a topological order of the inputs
        *and* of ``node_prereqs``.
    node_inputs, node_outputs, var_owner, output_vars
        The encoding of :func:`theano_lowmem.core.executed.cvm_order`.
    node_prereqs : sequence of sequences of int
        Prerequisite variables the graph already has (e.g. the
        DestroyHandler's), sorted.

    Returns
    -------
    pred : list of int
        For each node, the node it must wait for (``order[j-1]``), or ``-1``.
    walked : list of int
        The order the C VM runs with those prerequisites added (equals
        ``order`` when ``order`` respects every dependency; callers check).
    depth : int
        The C VM's recursion depth with them (see ``cvm_walk``).

    Notes
    -----
    One walk: O(nodes + inputs + prerequisites), plus the sort of each entered
    node's prerequisite list.

    Examples
    --------
    Two independent branches ``a0 -> a1`` and ``b0 -> b1`` summed by ``s``;
    the plan runs ``b`` first although ``s`` reads ``a1`` first:

    >>> ins = [[0], [1], [0], [3], [2, 4]]
    >>> outs = [[1], [2], [3], [4], [5]]
    >>> owner = [-1, 0, 1, 2, 3, 4]
    >>> pred, walked, depth = cvm_prereqs([2, 3, 0, 1, 4], ins, outs, owner,
    ...                                   [[]] * 5, [5])
    >>> pred              # only a0 must wait (for b1); the rest follows from the walk
    [3, -1, -1, -1, -1]
    >>> walked
    [2, 3, 0, 1, 4]
    """
    n = len(order)
    pos = [0] * n
    for j, node in enumerate(order):
        pos[node] = j
    pred = [-1] * n

    def prereqs_of(node: int, computed: Sequence[bool]) -> Sequence[int]:
        # (the walk copies what this returns: ``fixed`` itself is never changed)
        j = pos[node]
        fixed = node_prereqs[node]
        if j == 0:
            return fixed
        prev = order[j - 1]
        for v in node_outputs[prev]:
            if not computed[v]:
                break
        else:
            return fixed                                # P[j-1] already ran
        for v in node_inputs[node]:
            if var_owner[v] == prev:
                return fixed                            # the walk reaches it anyway
        for v in fixed:
            if var_owner[v] == prev:
                return fixed
        pred[node] = prev
        return sorted(set(fixed).union(node_outputs[prev]))

    walked, depth = cvm_walk(node_inputs, node_outputs, var_owner, prereqs_of, output_vars)
    return pred, walked, depth


def chain_depth(order: Sequence[int], node_inputs: Sequence[Sequence[int]],
                node_outputs: Sequence[Sequence[int]], var_owner: Sequence[int],
                node_prereqs: Sequence[Sequence[int]], output_vars: Sequence[int]) -> int:
    """The C VM's recursion depth when every node of ``order`` waits for the one before it.

    Examples
    --------
    >>> ins = [[0], [1], [0], [3], [2, 4]]
    >>> outs = [[1], [2], [3], [4], [5]]
    >>> chain_depth([2, 3, 0, 1, 4], ins, outs, [-1, 0, 1, 2, 3, 4], [[]] * 5, [5])
    5
    """
    prev = {node: order[j - 1] for j, node in enumerate(order) if j}

    def prereqs_of(node: int, computed: Sequence[bool]) -> list[int]:
        extra = node_outputs[prev[node]] if node in prev else ()
        return sorted(set(node_prereqs[node]).union(extra))

    return cvm_walk(node_inputs, node_outputs, var_owner, prereqs_of, output_vars)[1]
