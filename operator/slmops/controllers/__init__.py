"""The operator's kopf handlers. Importing this package registers them.

Run with `slmops operator` or `kopf run -m slmops.controllers`.

`SLMOPS_CONTROLLERS` (comma-separated: `slmmodel`, `edgerollout`; default both) runs only
some controllers: for splitting them over two deployments, and for tests in which the test
itself plays the SLMModel controller by writing a model's status.
"""

import importlib
import os

KNOWN = ("edgerollout", "slmmodel")
CONTROLLERS_ENV = "SLMOPS_CONTROLLERS"


def _enabled() -> list[str]:
    raw = os.environ.get(CONTROLLERS_ENV, "").strip()
    if not raw:
        return list(KNOWN)
    wanted = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(KNOWN))
    if unknown:
        raise ValueError(
            f"{CONTROLLERS_ENV} names unknown controllers {', '.join(unknown)}; "
            f"known: {', '.join(KNOWN)}"
        )
    return wanted


from slmops.controllers import settings  # noqa: E402  (operator-wide settings, always)

ENABLED = _enabled()
for _name in ENABLED:
    importlib.import_module(f"slmops.controllers.{_name}")

# The admission webhook needs a TLS listener the apiserver can reach; only when asked.
if os.environ.get("SLMOPS_ADMISSION_LISTEN"):
    importlib.import_module("slmops.controllers.admission")

__all__ = ["ENABLED", "settings"]
