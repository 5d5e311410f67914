"""nnspec.runtime.lab: the lecture's claims as tools and measured experiments.

Public API:
    lint(graph) -> list[Finding]             training-practice warnings (`nnspec lint`)
    spec_statistics(...)                     activations/gradients at init (`nnspec init-stats`)
    model_spectrum(...)                      top Hessian eigenvalues and trace (`nnspec hessian`)
    run_sweep(settings) / parse_grid(...)    grids of overrides x seeds (`nnspec sweep`)
    execute_sweep(backend, runs, out, ...)   the grid on a backend: local, Ray Tune
    load_experiment / run_experiment         the lecture's claims (`nnspec experiments`)
    rejudge(verdicts, summary)               stored verdicts by the current rule (Welch / TOST)
    build_report(paths, out)                 self-contained HTML report (`nnspec report`)
    graph_to_dot / render_svg                Graphviz drawings (`nnspec graph`)
"""

from nnspec.runtime.common.lazy import lazy_exports

_EXPORTS = {
    "lint": "lint", "Finding": "lint", "spec_statistics": "init_stats",
    "model_spectrum": "hessian", "estimate_spectrum": "hessian",
    "run_sweep": "sweep", "parse_grid": "sweep", "SweepSettings": "sweep",
    "execute_sweep": "sweep", "BackendOptions": "sweep", "BACKENDS": "sweep",
    "load_experiment": "experiments", "run_experiment": "experiments", "rejudge": "verdicts",
    "build_report": "report", "graph_to_dot": "graph_draw", "render_svg": "graph_draw",
    "torchvision_figures": "zoo_reference",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
