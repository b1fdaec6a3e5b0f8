"""Sans-IO wire helpers that are not protocols of their own: AWS SigV4 signing
(`sigv4.py`) and AWS event-stream binary framing (`eventstream.py`).

Layer 2: no I/O, no asyncio, and nothing above (gateway, providers, http,
config, snapshot) is imported here.
"""
