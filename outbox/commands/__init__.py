"""The operator's commands beyond the basics: each module holds one command's grammar and logic,
so that cli.py stays a dispatcher. Every write they make is a statement of outbox.store."""
