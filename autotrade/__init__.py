"""Multi-user auto-trading for Korean equities: AI scan to Kiwoom orders with a three-tier exit."""

__version__ = "0.1.0"
