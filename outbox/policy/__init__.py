"""Meta's rules, checked at send time from the database: the customer-service window
(window.py), the marketing suppression list (consent.py), and the decision they make together
for a claimed row (decide.py); quiet hours in the recipient's time zone (quiet.py).
numbers.py compares customers the way Meta writes them; receiver.py
reads what the webhooks tell about both rules."""

from outbox.policy.consent import OptOut, add_optout, list_optouts, remove_optout
from outbox.policy.window import Window, window

__all__ = ["OptOut", "Window", "add_optout", "list_optouts", "remove_optout", "window"]
