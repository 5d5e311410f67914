"""nnspec.runtime: training, export, serving and reports on top of nnspec.compiler."""
