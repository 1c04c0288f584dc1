"""Hardware-aware architecture search (BCNet/CafeNet width search, EoiNAS, Meta-Kernel, MCT-NAS, DAGGER).

Search algorithms emit :class:`zoo.ArchSpec` files that the zoo builds and registers; they read
costs through :func:`zoo.iter_ops`. The algorithms arrive with their own issues; nothing here yet.
"""
