"""Direct Approach forecasts: scaling laws -> compute for indistinguishability -> TAI arrival year.

Modules: scaling (parameter sets, noise, allocation), kperf (SPRT k-performance), modes (reference vs
corrected maths), inversion (k -> compute), posterior (update on no TAI yet), requirements (Monte Carlo),
hardware and timeline (spending x FLOP/$ x algorithms), pipeline (presets, both modes, comparison),
plots, cli.
Import submodules directly; this package import stays light so `alignlab --help` is fast.
"""
