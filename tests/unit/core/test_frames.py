"""RecentFrames: reuse only for the same immutable object, within every bound."""

from channels_tuning.core.frames import RecentFrames


def test_a_frame_is_found_only_for_its_own_object_and_context():
    frames = RecentFrames()
    context, other_context = object(), object()
    text = "".join(["hello", " world"])  # built at run time: not an interned constant
    frames.put(text, context, "frame")
    assert frames.get(text, context) == "frame"
    assert frames.get(text, other_context) is None
    equal = "".join(["hello ", "world"])
    assert equal == text and equal is not text
    assert frames.get(equal, context) is None


def test_mutable_payloads_are_never_kept():
    frames = RecentFrames()
    context = object()
    for payload in (bytearray(b"abc"), memoryview(b"abc")):
        frames.put(payload, context, "frame")
        assert frames.get(payload, context) is None
    assert len(frames) == 0


def test_the_payload_is_held_so_a_freed_address_cannot_match():
    frames = RecentFrames()
    context = object()
    frames.put("".join(["a", "b"]), context, "frame")
    # The table keeps the only reference, so no new object can take its address.
    (held,) = (entry[0] for entry in frames._frames.values())
    assert held == "ab" and frames.get(held, context) == "frame"


def test_bounded_by_count_length_and_total_size():
    frames = RecentFrames(capacity=3, longest=10, budget=25)
    context = object()
    frames.put("x" * 11, context, "too long")
    assert len(frames) == 0
    texts = [str(i) * 8 for i in range(1, 5)]
    for text in texts[:3]:
        frames.put(text, context, text)
    assert len(frames) == 3 and frames.held == 24
    frames.put(texts[3], context, texts[3])  # a fourth: over the count, emptied first
    assert len(frames) == 1 and frames.get(texts[3], context) == texts[3]
    assert frames.get(texts[0], context) is None
    small = [chr(97 + i) * 9 for i in range(3)]
    frames = RecentFrames(capacity=100, longest=10, budget=25)
    for text in small:
        frames.put(text, context, text)
    assert len(frames) == 1 and frames.held == 9  # 27 > 25: emptied before the third
    # Putting the same object again does not count it twice.
    frames.put(small[2], context, "again")
    assert frames.held == 9 and frames.get(small[2], context) == "again"
