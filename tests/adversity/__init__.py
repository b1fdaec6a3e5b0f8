"""Adversity tests: slow, vanishing and crowding clients; dead, slow and lying upstreams."""
