"""The optimizer's two unit sets: committed units and the running period's, disjoint at every step."""

from tests.optimizer.common import DigitsNet, build, train


def _hesso(oto):
    return oto.hesso(variant="adam", lr=1e-3, target_group_sparsity=0.5, start_pruning_step=1, pruning_steps=9,
                     pruning_periods=3)


def test_committed_and_active_units_stay_disjoint_and_pruned_is_their_union():
    model, oto = build(DigitsNet, quantized=False)
    optimizer = _hesso(oto)
    seen_both = False
    for step in range(12):
        train(model, optimizer, 1, first_step=step)
        committed, active = optimizer.committed_unit_ids, optimizer.active_redundant_group_idxes
        assert not set(committed) & set(active)
        assert optimizer.pruned_unit_ids == sorted(committed + active)
        seen_both = seen_both or bool(committed and active)
    assert seen_both, "the schedule should reach a period that runs while earlier units are committed"
    assert len(optimizer.committed_unit_ids) == optimizer.target_num_redundant_groups


def test_a_saved_state_restores_both_sets_from_the_reference_union():
    model, oto = build(DigitsNet, quantized=False)
    optimizer = _hesso(oto)
    train(model, optimizer, 5)
    assert optimizer.committed_unit_ids and optimizer.active_redundant_group_idxes
    state = optimizer.state_dict()
    assert "committed_unit_ids" not in state  # the reference's format: the union and the running period's units
    restored = _hesso(oto)
    restored.load_state_dict(state)
    assert restored.committed_unit_ids == optimizer.committed_unit_ids
    assert restored.active_redundant_group_idxes == optimizer.active_redundant_group_idxes
    assert [g["pruned_idxes"] for g in restored.param_groups] == [g["pruned_idxes"] for g in optimizer.param_groups]
