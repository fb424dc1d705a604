"""The cost ledger: Meta's `pricing` object of status webhooks, a dated rate card, and totals."""
