"""SOAP done once: the hardened XML parser, zeep over aiohttp, fault classes, WS-Security and XML signatures.

Nothing is re-exported here on purpose: importing `gateway.soap.xml` must not pull in zeep or aiohttp
(the import rules follow a package's `__init__`), so pure mapping code and simulators can parse XML safely.
"""
