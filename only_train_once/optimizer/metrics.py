"""``SparseOptimizerMetrics``: group-sparsity read-out of a hybrid sparse optimizer (SPEC 5.8)."""

from types import MappingProxyType
from typing import Mapping, Sequence


class SparseOptimizerMetrics:
    """Counts and norms over the units of the prunable groups, refreshed by ``compute_metrics()``.

    ``num_groups``: prunable units; ``num_zero_groups``: units whose slices are all exactly zero;
    ``group_sparsity = num_zero_groups / num_groups``; ``norm_*``: sums of the units' L2 norms over all,
    important, and redundant (selected or pruned) units. The violating-set fields are HESSOCRIC's.

    GETA also fills (empty otherwise): ``loss_trend`` (mean reported loss per ended projection/pruning period,
    then that of the running one), and per layer name ``weight_bits``, ``activation_bits`` (rounded bit widths),
    ``weight_step_sizes``, ``activation_step_sizes`` (quantizer steps ``d``).
    """

    num_groups = 0
    num_zero_groups = 0
    num_important_groups = 0
    num_redundant_groups = 0
    num_violating_groups = 0
    num_trial_violating_groups = 0
    num_historical_violating_groups = 0
    norm_violating_groups = 0.0
    norm_params = 0.0
    norm_important_groups = 0.0
    norm_redundant_groups = 0.0
    group_sparsity = 0.0
    loss_trend: Sequence[float] = ()
    # read-only class defaults; compute_metrics assigns fresh dicts
    weight_bits: Mapping[str, int] = MappingProxyType({})
    activation_bits: Mapping[str, int] = MappingProxyType({})
    weight_step_sizes: Mapping[str, float] = MappingProxyType({})
    activation_step_sizes: Mapping[str, float] = MappingProxyType({})

    def reset(self) -> None:
        """Back to the class defaults (every field 0)."""
        self.__dict__.clear()

    def __repr__(self) -> str:
        return (f"num_zero_grps: {self.num_zero_groups}, gs: {self.group_sparsity:.2f}, "
                f"norm_params: {self.norm_params:.2f}, norm_import: {self.norm_important_groups:.2f}, "
                f"norm_violating: {self.norm_violating_groups:.2f}, norm_redund: {self.norm_redundant_groups:.2f}, "
                f"num_grps_import: {self.num_important_groups}, num_grps_redund: {self.num_redundant_groups}, "
                f"num_grps_violating: {self.num_violating_groups}, "
                f"num_grps_trial_violating: {self.num_trial_violating_groups}, "
                f"num_grps_hist_violating: {self.num_historical_violating_groups}")
