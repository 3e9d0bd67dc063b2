"""Pulled feeds: partner records read with a cursor, published to a topic, one process polling each feed.

Adapters implement `gateway.feeds.source.FeedSource`; the composition root runs one
`gateway.feeds.poller.FeedPoller` per source. This package's `__init__` imports nothing, so an adapter that
imports the source types does not pull in the Kafka side (tests/unit/test_import_rules.py).
"""
