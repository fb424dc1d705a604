"""Media uploaded once (`--media-mode upload`, the default): a media part's link is fetched by
the daemon, checked against Meta's limits (limits.py), uploaded through
`POST /{phone_number_id}/media` (upload.py judges Meta's answer) and sent by id; the ids are
kept per sender, link or content hash, and kind in `outbox_media` (ids.py) for 29 of Meta's 30
days. fetch.py reads the links."""
