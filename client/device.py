"""The device a `ClientApp` runs on: where its data, the public catalog and its local state
come from.

A real device (a phone, a browser, an edge box running `fedrec client start`) keeps all of it
in its `DeviceStore`, the SQLite file named by the node's `--node-config "store='PATH'"`. A
virtual device of a simulation gets its data from a partition of a data set instead; the
simulation names the function that opens one under the run-config key `devices`
(`fedrec.simulation.devices:open_device`), so this package never imports the simulation.
Either way the ClientApp sees the same interface, and the device's privacy account, ledger and
personal state live in a `DeviceStore` on the device.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Protocol

import numpy as np

from fedrec.common.errors import ConfigError
from fedrec.common.plan import DEVICES_KEY, RunPlan

STORE_KEY = "store"  # node-config key: the device store's path


class Device(Protocol):
    """What the ClientApp needs from the device it runs on."""

    partition: int | None  # a virtual device's index in its data set; None on a real device

    @property
    def store(self):
        """The device's `DeviceStore` (personal state, privacy account, ledger, identity)."""

    def user_data(self):
        """This user's data (`fedrec.client.local.UserData`): training items in time order,
        the held-out validation and test items."""

    def catalog(self):
        """(n_items, d) float32 torch tensor: the catalog's frozen embeddings (public)."""

    def received_head(self, round_: int, arrays: list[np.ndarray], plan: RunPlan) -> None:
        """A global head arrived (a real device caches it to recommend offline)."""


class StoreDevice:
    """A real device: everything comes from its `DeviceStore`."""

    partition = None

    def __init__(self, store):
        self._store = store

    @property
    def store(self):
        return self._store

    def user_data(self):
        return self._store.user_data()

    def catalog(self):
        import torch

        embeddings = self._store.catalog()
        if embeddings is None:
            raise ConfigError(f"{self._store.path}: this device store has no catalog yet; "
                              "install one with `FedrecClient(store=...).install(...)`")
        return torch.as_tensor(embeddings)

    def received_head(self, round_: int, arrays: list[np.ndarray], plan: RunPlan) -> None:
        from dataclasses import asdict

        head = self._store.head()
        if head is None or head.round <= round_:
            self._store.save_head(round_, arrays, asdict(plan.model))


def simulated(context) -> bool:
    """Whether this node is a simulation's virtual node (Flower's simulation engine gives each
    a `partition-id`; a real SuperNode has only the node config its operator set)."""
    return "partition-id" in context.node_config and STORE_KEY not in context.node_config


def open_device(plan: RunPlan, context) -> Device:
    """The device of this ClientApp: on a simulation's node, the virtual device the run's
    `devices` opener makes; on a real node, the device store at its `store` path. A real
    device never runs code the server names."""
    opener = str(context.run_config.get(DEVICES_KEY, "") or "")
    if opener and simulated(context):
        return _load(opener)(plan, context)
    path = context.node_config.get(STORE_KEY)
    if not path:
        raise ConfigError("this node has no device store: start it with `fedrec client start "
                          "--store PATH` (node config 'store')")
    from fedrec.client.store import DeviceStore

    return StoreDevice(DeviceStore(str(path)))


@lru_cache(maxsize=4)
def _load(reference: str):
    module, _, name = reference.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"run-config key '{DEVICES_KEY}' = '{reference}': cannot load it "
                          f"({exc}); expected 'package.module:function'") from None
