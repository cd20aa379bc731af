"""Header pairs shared between connections (channels_tuning/core/headers.py): the list
keeps its pairs, in order and equal; pairs alike are held once; bounded whatever
clients send; anything not shaped as servers build it is left alone."""

from __future__ import annotations

import os

from channels_tuning.core.headers import SharedHeaders


def request(user_agent: str = "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.0.0") -> list:
    """An upgrade request's headers as a server builds them: new objects every time
    (a literal pair would be one constant object shared by the calls)."""
    raw = [
        ("host", "chat.example.com"),
        ("upgrade", "websocket"),
        ("user-agent", user_agent),
        ("cookie", f"sessionid={os.urandom(16).hex()}"),
        ("sec-websocket-key", os.urandom(16).hex()),
        ("origin", "https://chat.example.com"),
    ]
    return [(name.encode(), value.encode()) for name, value in raw]


def test_pairs_alike_are_held_once_and_the_list_keeps_its_pairs_in_order():
    table = SharedHeaders()
    first, second = request(), request()
    expected = list(second)
    table.share(first)
    kept = second
    table.share(second)
    assert second is kept and second == expected
    for index in (0, 1, 2, 5):  # host, upgrade, user-agent, origin
        assert second[index] is first[index]
    for index in (3, 4):  # cookie and key: their own value, the name shared
        assert second[index][1] is expected[index][1]
        assert second[index][0] is first[index][0]
        assert second[index] is not first[index]


def test_values_that_differ_per_connection_do_not_grow_the_table():
    table = SharedHeaders()
    for _ in range(200):
        table.share(request())
    assert len(table) == 6  # four pairs, the cookie's name and the key's


def test_bounded_whatever_clients_send_and_still_equal():
    table = SharedHeaders(capacity=8)
    for n in range(100):
        headers = request(user_agent=f"agent/{n}")
        expected = list(headers)
        table.share(headers)
        assert headers == expected
        assert len(table._pairs) <= 8 and len(table._names) <= 8
    again = request(user_agent="agent/99")
    table.share(again)
    assert again[2] is headers[2]  # the newest pairs are shared after a refill


def test_long_values_are_not_kept():
    table = SharedHeaders(longest_value=20)
    first, second = request(user_agent="x" * 21), request(user_agent="x" * 21)
    table.share(first)
    table.share(second)
    assert second[2] == first[2] and second[2] is not first[2]
    assert second[2][0] is first[2][0]
    assert second[0] is first[0]


def test_long_names_are_not_kept():
    table = SharedHeaders(longest_name=8)
    first, second = (
        [("-".join(["x", "invented", "name"]).encode(), os.urandom(4).hex().encode())] for _ in "12"
    )
    table.share(first)
    table.share(second)
    assert second[0][0] == first[0][0] and second[0][0] is not first[0][0]
    assert len(table) == 0


def test_anything_not_shaped_as_servers_build_it_is_left_alone():
    table = SharedHeaders()
    table.share(request())
    as_tuple = tuple(request())
    table.share(as_tuple)  # not a list: cannot be changed in place, and is not
    odd = [
        [b"host", b"chat.example.com"],  # a list, not a tuple
        ("host", "chat.example.com"),  # str, not bytes
        (b"host", b"chat.example.com", b"x"),  # three items
        (b"host", ["unhashable"]),
    ]
    before = [id(pair) for pair in odd]
    table.share(odd)
    assert [id(pair) for pair in odd] == before
    table.share(None)
    table.share({"host": "x"})
