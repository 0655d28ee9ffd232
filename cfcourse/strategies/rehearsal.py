"""Replay (reservoir and class-balanced buffers) and A-GEM; see lesson 05."""
