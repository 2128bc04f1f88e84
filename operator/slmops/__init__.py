"""slmops: small language models, built per hardware class, rolled out to edge fleets."""

__version__ = "0.1.0"
