"""slmops: build small language model variants per hardware class and roll them out to edge fleets."""

__version__ = "0.1.0"
