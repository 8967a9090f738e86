"""Plot a :class:`~theano_lowmem.report.Report`: live bytes per step, Theano's order against ours.

matplotlib is an optional extra (``pip install theano_lowmem[plot]``); it is
imported only when a plot is drawn, with the non-interactive ``Agg`` backend.
"""
from __future__ import annotations

from typing import Sequence


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:   # optional dependency
        raise ImportError("plotting needs matplotlib: pip install 'theano_lowmem[plot]' "
                          "(or pip install matplotlib)") from exc
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _unit(peak: float) -> tuple[str, float]:
    for unit, scale in (("GB", 2.0 ** 30), ("MB", 2.0 ** 20), ("KB", 2.0 ** 10)):
        if peak >= scale:
            return unit, scale
    return "B", 1.0


def plot_report(report, path: str, *, dpi: int = 110) -> str:
    """Write the plot of ``report`` to ``path`` (PNG) and return ``path``.

    Lines: modelled live bytes while each step runs (``MemoryTrace.during``)
    for Theano's order and ours, each peak marked.  Points: the measured
    high-water mark of each node of a real gc-on call (tracemalloc, above the
    level before the call), when the report traced them.

    Raises
    ------
    ImportError
        If matplotlib is not installed.

    Examples
    --------
    >>> import numpy as np, theano, theano.tensor as T, tempfile, os
    >>> from theano_lowmem.report import report
    >>> x = T.vector('x'); f = theano.function([x], T.exp(x).sum())
    >>> p = plot_report(report(f, np.ones(1000), measure=False), os.path.join(tempfile.mkdtemp(), 'r.png'))
    >>> open(p, 'rb').read(4) == b'\\x89PNG'
    True
    """
    plt = _pyplot()
    s, m = report.series, report.modelled
    peak = max([m["theano"], m["ours"], *s.get("measured_stock", []), *s.get("measured_ours", [])] or [1])
    unit, scale = _unit(peak)
    fig, ax = plt.subplots(figsize=(11.5, 4.8))
    styles = (("theano", "Theano's order (modelled)", "tab:red", "measured_stock",
               "stock, measured per node"),
              ("ours", "ours (modelled)", "tab:blue", "measured_ours", "ours, measured per node"))
    for key, label, color, mkey, mlabel in styles:
        during: Sequence[int] = s[f"{key}_during"]
        xs = range(1, len(during) + 1)
        ax.step(xs, [d / scale for d in during], where="mid", color=color, lw=1.8,
                label=f"{label}: peak {m[key] / scale:.2f} {unit}")
        step = m[f"{key}_peak_step"]
        if step >= 0:
            ax.plot([step + 1], [during[step] / scale], "v", color=color, ms=9)
        meas = s.get(mkey)
        if meas:
            ax.plot(range(1, len(meas) + 1), [b / scale for b in meas], ".", color=color, alpha=0.55,
                    ms=6, label=f"{mlabel} (max {max(meas) / scale:.2f} {unit})")
    opt = m["optimum"]
    ax.axhline(opt / scale, color="gray", ls="--", lw=1,
               label=f"{'optimum' if m['optimal'] else 'best found'}: {opt / scale:.2f} {unit}")
    ax.set_xlabel("step (node executed)")
    ax.set_ylabel(f"live intermediate bytes ({unit})")
    ax.set_title(f"{report.name}: live memory per step ({report.n_nodes} nodes)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
