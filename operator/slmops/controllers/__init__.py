"""The operator's kopf handlers. Importing this package registers them.

Run with `slmops operator` or `kopf run -m slmops.controllers`.
"""

from slmops.controllers import edgerollout, settings, slmmodel

__all__ = ["edgerollout", "settings", "slmmodel"]
