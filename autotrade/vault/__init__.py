"""Credential vault: KMS envelope encryption of users' broker keys, short-lived scoped tokens, the zero-trust
broker gateway (the only holder of broker tokens) and the anomaly kill switch."""
