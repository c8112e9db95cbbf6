"""Pure domain core: models, KRX rules, signals, risk, the three-tier exit and order intents. No I/O."""
