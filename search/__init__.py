"""Hardware-aware architecture search (BCNet/CafeNet width search, EoiNAS, Meta-Kernel, MCT-NAS, DAGGER).

Search algorithms emit :class:`zoo.ArchSpec` files that the zoo builds and registers; they read
costs through :func:`zoo.iter_ops` and latency through :mod:`latency_tables`. The search spaces are data
in :mod:`zoo.spaces` (sample, mutate, build a spec, enumerate the op keys a latency table must hold);
the algorithms arrive with their own issues.
"""
