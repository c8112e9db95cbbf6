"""Kiwoom-protocol simulator: market engine, virtual clock, fault injection, ASGI app speaking Kiwoom's REST
and WebSocket protocol. The embedded default broker of the demo, the tests and the benchmarks."""
