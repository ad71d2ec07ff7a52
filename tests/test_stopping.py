"""The early-stopping rule of fig. 4.5 (stopping.py) on scripted loss sequences, its variants and its state."""

from raybench import spec
from raybench.stopping import EarlyStopping


def scripted_stop(losses, **kwargs):
    """Feed a scripted loss sequence to EarlyStopping; return (epochs run, 1-based tested epoch)."""
    stopper = EarlyStopping(**kwargs)
    for epoch, loss in enumerate(losses, start=1):
        stopper.step(loss)
        if stopper.should_stop:
            return epoch, stopper.best_epoch + 1
    return len(losses), (stopper.best_epoch + 1 if stopper.best_epoch is not None else None)


def test_best_at_epoch_11_stops_after_31():
    losses = [2.0] * 10 + [1.0] + [0.95] * 100  # 0.95 is not below 1.0 - 0.1
    assert scripted_stop(losses) == (31, 11)


def test_first_ten_epochs_are_never_considered():
    losses = [0.1] * 10 + [5.0] + [5.0] * 100  # the low early losses do not count
    assert scripted_stop(losses) == (31, 11)


def test_improvement_must_beat_best_minus_a_tenth_strictly():
    # epoch 12 is only 0.1 below epoch 11's loss: not strictly below best - 0.1 (fig. 4.5)
    losses = [3.0] * 10 + [2.0, 1.9] + [1.95] * 30
    assert scripted_stop(losses) == (31, 11)
    losses = [3.0] * 10 + [2.0, 1.85] + [1.95] * 30
    assert scripted_stop(losses) == (32, 12)


def test_the_tested_checkpoint_is_the_last_improvement_not_the_lowest_loss():
    losses = [3.0] * 10 + [2.0, 1.5, 1.45, 1.42] + [1.44] * 30
    epochs, best = scripted_stop(losses)
    assert best == 12 and epochs == 32  # 1.42 at epoch 14 is lower but not an improvement


def test_cap_without_stop():
    losses = [10.0 - 0.2 * i for i in range(100)]
    assert scripted_stop(losses) == (100, 100)


def scripted(losses, **kwargs):
    """(epochs run, 1-based tested epoch, the epochs flagged to checkpoint) of a scripted loss sequence."""
    stopper, flagged = EarlyStopping(**kwargs), []
    for epoch, loss in enumerate(losses, start=1):
        if stopper.step(loss):
            flagged.append(epoch)
        if stopper.should_stop:
            break
    return epoch, stopper.tested_epoch + 1, flagged


def test_relative_early_stopping_stops_where_its_rule_says():
    losses = [1.0, 0.96, 0.94, 0.90, 0.89, 0.88, 0.87, 0.86]
    # relative 0.05: improvements must go below 0.95, then below 0.94 x 0.95 = 0.893; 0.88 and 0.87 are not below
    # 0.89 x 0.95 = 0.8455: two epochs without improvement stop at epoch 7
    assert scripted(losses, start=0, patience=2, min_delta=0.05, mode="relative") == (7, 5, [1, 3, 5])
    # absolute 0.05: 0.94 improves (below 0.95); 0.90 and 0.89 are not below 0.89: stop at epoch 5
    assert scripted(losses, start=0, patience=2, min_delta=0.05) == (5, 3, [1, 3])
    # the same relative rule at ten times the loss: the same epochs (an absolute one would not be)
    assert scripted([10 * v for v in losses], start=0, patience=2, min_delta=0.05, mode="relative") == (7, 5, [1, 3, 5])


def test_lowest_val_loss_tests_the_lowest_epoch_and_stops_as_the_thesis():
    losses = [3.0] * 10 + [2.0, 1.5, 1.45, 1.42] + [1.44] * 30
    assert scripted(losses) == (32, 12, [11, 12])  # the thesis: the last improvement
    assert scripted(losses, tested="lowest_val_loss") == (32, 14, [11, 12, 13, 14])  # 1.42, not an improvement
    early = [0.1] * 10 + [5.0, 4.0, 4.5] + [4.5] * 30  # the epochs before es_start are never tested
    assert scripted(early, tested="lowest_val_loss")[1] == 12


def test_a_restored_stopper_with_the_new_rules_decides_as_an_uninterrupted_one():
    losses = [3.0] * 10 + [2.0, 1.85, 1.9, 1.7, 1.68] + [1.75] * 40
    rules = {"min_delta": 0.05, "mode": "relative", "tested": "lowest_val_loss"}
    expected = scripted(losses, **rules)
    first = EarlyStopping(**rules)
    for loss in losses[:13]:
        first.step(loss)
    second = EarlyStopping(start=0, patience=1, min_delta=5.0)  # the state carries the rule too
    second.load_state_dict(first.state_dict())
    epoch = 13
    for loss in losses[13:]:
        epoch += 1
        second.step(loss)
        if second.should_stop:
            break
    assert (epoch, second.tested_epoch + 1) == expected[:2] == (34, 15)  # 1.68 is the lowest, 1.7 the last improvement
    assert (second.mode, second.tested, second.best_epoch + 1) == ("relative", "lowest_val_loss", 14)


def test_the_state_is_every_field_and_the_earliest_stop_follows_the_rule():
    stopper = EarlyStopping.from_config(
        spec.TrainConfig(es_start=3, es_patience=4, es_mode="relative", es_min_delta=0.2)
    )
    assert (stopper.start, stopper.patience, stopper.mode, stopper.min_delta) == (3, 4, "relative", 0.2)
    assert set(stopper.state_dict()) == {f for f in EarlyStopping.__dataclass_fields__}
    # the earliest stop: the first considered epoch improves, then `patience` epochs do not
    epochs = 0
    while not stopper.should_stop:
        stopper.step(1.0)
        epochs += 1
    assert epochs == stopper.earliest_stop == 3 + 4 + 1
