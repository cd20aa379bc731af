"""Wire formats: what goes over the socket, independent of any server or layer.

- :mod:`.closecodes`: every close code the package sends, its log level and what a
  client should do after it (:mod:`.reconnect` is that table for the clients);
- :mod:`.heartbeat`: the application-level ping and pong frames;
- :mod:`.codecs` and :mod:`.proto`: JSON and protobuf envelopes.

Nothing here imports Django, Channels or a server, so the Python client
(:mod:`channels_tuning.client`) can use it alone.
"""
