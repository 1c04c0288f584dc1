"""Per-device latency lookup tables (versioned data files keyed on :attr:`zoo.OpCost.key`).

Tables and their loader arrive with the latency issue; measurement code lives in :mod:`export`.
"""
