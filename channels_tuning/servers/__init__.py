"""The servers tuned consumers run under, and how a consumer tells them apart.

- :mod:`.detect`: which server a connection's ``send`` belongs to, and what that
  allows (synchronous writes, flow control);
- :mod:`.daphne`: ``channels-tuning-daphne``, daphne with flow control, bounded
  inbound queues, opt-in compression and a graceful drain;
- :mod:`.lifespan`: the ASGI lifespan handler that gives uvicorn and hypercorn the
  same shutdown (close with 1012, wait for every connection's cleanup);
- :mod:`.guarantees`: what holds on each server (the guarantees table).

A new server belongs here as a module of its own, its private hooks in
:mod:`channels_tuning.compat`.
"""
