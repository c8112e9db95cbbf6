"""Async Kiwoom REST client: typed messages and errors, token manager, per-key rate limiter, price feeds."""
