"""fedrec.client: everything that runs on a device. `fedrec.client.FedrecClient` (the app
SDK, `fedrec.client.sdk`) is loaded on first use, so importing this package stays light."""

from __future__ import annotations

__all__ = ["FedrecClient"]


def __getattr__(name: str):
    if name == "FedrecClient":
        from fedrec.client.sdk import FedrecClient

        return FedrecClient
    raise AttributeError(f"module 'fedrec.client' has no attribute '{name}'")
