"""`slmops demo`: the whole story on a local testbed, for a newcomer's first five minutes."""
