"""Broker runtime: the key-ordered concurrent consumer, offset tracking, and publishing."""
