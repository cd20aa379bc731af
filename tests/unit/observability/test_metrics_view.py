"""``channels_tuning.views.metrics``: /metrics for listed addresses and staff only."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.core.checks import run_checks
from django.test import RequestFactory, override_settings

from channels_tuning.views import metrics

STAFF = SimpleNamespace(is_active=True, is_staff=True)
USER = SimpleNamespace(is_active=True, is_staff=False)


def get(address: str, user=None):
    request = RequestFactory().get("/metrics", REMOTE_ADDR=address)
    if user is not None:
        request.user = user
    return metrics(request)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_loopback_gets_the_exposition(address):
    response = get(address)
    assert response.status_code == 200
    assert b"channels_tuning_" in response.content


@pytest.mark.parametrize("address", ["127.0.0.2", "10.1.2.3", "2001:db8::1", "not-an-address", ""])
def test_anyone_else_gets_403(address):
    assert get(address).status_code == 403
    assert get(address, USER).status_code == 403


def test_staff_users_get_it_from_anywhere():
    assert get("10.1.2.3", STAFF).status_code == 200
    assert get("10.1.2.3", SimpleNamespace(is_active=False, is_staff=True)).status_code == 403


@override_settings(CHANNELS_TUNING={"METRICS_ALLOWED_ADDRESSES": ["10.0.0.0/8"]})
def test_the_setting_lists_networks():
    assert get("10.1.2.3").status_code == 200
    assert get("127.0.0.1").status_code == 403


@override_settings(CHANNELS_TUNING={"METRICS_ALLOWED_ADDRESSES": ["10.0.0.0/33"]})
def test_a_bad_network_is_a_system_check_error():
    assert "channels_tuning.E011" in {message.id for message in run_checks()}
