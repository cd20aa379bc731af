from channels_tuning.core.every import Every


def test_due_at_once_then_an_interval_after_each_run():
    period = Every(60.0)
    assert period.due(0.0)
    period.ran(10.0)
    assert not period.due(69.9)
    assert period.due(70.0)
    period.reset()
    assert period.due(10.0)
