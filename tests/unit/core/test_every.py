from channels_tuning.core.every import Every


def test_due_at_once_then_an_interval_after_each_run():
    period = Every(60.0)
    assert period.due(0.0)
    period.ran(10.0)
    assert not period.due(69.9)
    assert period.due(70.0)
    period.reset()
    assert period.due(10.0)


def test_first_run_at_a_given_time_and_overdue_a_whole_interval_later():
    period = Every(10.0, first_at=100.0)
    assert not period.due(99.9)
    assert period.due(100.0) and not period.overdue(109.9)
    assert period.overdue(110.0)
    period.ran(110.0)
    assert not period.due(119.9) and not period.overdue(129.9)
