"""Compact JSON for frames and kept history: UTF-8, not escapes."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from channels_tuning.layers.frames import encode_frame
from channels_tuning.wire.compact import compact_json


def test_non_ascii_text_costs_its_utf8_bytes_not_escapes():
    typed = {"text": "😀" * 1000}
    assert len(compact_json(typed).encode()) == 4000 + len('{"text":""}')
    assert len(json.dumps(typed).encode()) > 12_000  # the former encoding
    assert encode_frame(typed)["text"] == compact_json(typed)


def test_a_lone_surrogate_keeps_its_escape():
    text = compact_json({"text": "a\udc80b"})
    assert text == '{"text":"a\\udc80b"}'
    text.encode()  # sendable


_scalars = st.none() | st.booleans() | st.integers() | st.text()
_json = st.recursive(
    _scalars, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=10
)


@given(_json)
def test_the_text_is_the_same_json_and_always_utf8(value):
    text = compact_json(value)
    text.encode()
    assert json.loads(text) == value
