"""Width search: BCNet's and CafeNet's weight-sharing supernets, their training steps and the evolutionary search.

One supernet per width space (:class:`WidthSupernet`: the space's full-width zoo model; a sub-network is
a width arch plus a channel placement), BCNet's bilateral training step and loss records
(:mod:`.bcnet`), its prior (:mod:`.prior`), CafeNet's bins, placements and min-min step (:mod:`.cafenet`),
budgets on MACs and device latency (:mod:`search.budget`, shared by every search), the resumable evolutionary search
(:mod:`.evolution`) and the end-to-end searches with their saved result (:mod:`.search`).

Typical use (BCNet, MobileNetV2 on CIFAR-10)::

    space = MobileNetV2WidthSpace(fractions=BCNET_FRACTIONS, layout="cifar")
    supernet = WidthSupernet(space)
    bcnet = BCNetTrainer(supernet)
    Trainer(supernet, config, train_data, step_fn=bcnet.step_fn, extras={"bcnet": bcnet}).fit()
    cost = CostModel(space, Budget(max_macs=150_000_000))
    result = run_bcnet_search(supernet, bcnet.records, RecalibratedScorer(train_loader, val_loader), cost,
                              state_path="out/search_state.json")
    result.save("out/bcnet_150m")
"""

from common.lazy import lazy_exports

# Loaded on first use (each module imports torch), so the command line's parser imports none of them.
__getattr__, __dir__ = lazy_exports(__name__, globals(), {
    ".bcnet": ("BCNetConfig", "BCNetTrainer", "LossRecords", "complement"),
    ".cafenet": ("BinLayout", "BinPlacement", "CafeNetConfig", "CafeNetTrainer", "flops_sensitive_bins"),
    "search.budget": ("Budget", "CostModel", "Costs"),
    ".evolution": ("EvolutionConfig", "EvolutionSearch", "SearchOutcome", "SearchState"),
    ".prior": ("Prior", "PriorConfig", "fit_prior"),
    ".search": ("BCNetFitness", "CafeNetFitness", "RecalibratedScorer", "WidthSearchResult", "run_bcnet_search",
                "run_cafenet_search", "save_result"),
    ".supernet": ("LEFT", "RIGHT", "PairwiseCost", "Placement", "SidePlacement", "WidthSupernet"),
})

__all__ = ["BCNetConfig", "BCNetFitness", "BCNetTrainer", "BinLayout", "BinPlacement", "Budget", "CafeNetConfig",
           "CafeNetFitness", "CafeNetTrainer", "CostModel", "Costs", "EvolutionConfig", "EvolutionSearch", "LEFT",
           "LossRecords", "PairwiseCost", "Placement", "Prior", "PriorConfig", "RIGHT", "RecalibratedScorer",
           "SearchOutcome", "SearchState", "SidePlacement", "WidthSearchResult", "WidthSupernet", "complement",
           "fit_prior", "flops_sensitive_bins", "run_bcnet_search", "run_cafenet_search", "save_result"]
