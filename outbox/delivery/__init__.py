"""The delivery loop (`outbox run`): claim due rows, send each one's parts, record every accepted
part before the next, pace the sends, and stop a sender that is paused or in an outage.

Nothing is imported here: `import outbox` (for enqueue) must not load the daemon.
"""
