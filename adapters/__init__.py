"""One adapter per partner; each has settings, client, mapping, handlers and simulator modules."""
