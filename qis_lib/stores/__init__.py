"""Stores: the contract (`Store`), one module per store, and the registry of them.

Only the contract and the registry are imported here; a store's module, and its
client library, are imported when that store is chosen.
"""
from .contract import Capabilities, QueryFilter, Store, StoreBusyError, StoreDamagedError
from .registry import STORES, Mode, StoreSpec, all_modes, open_store, register_store, store_spec, unregister_store

__all__ = ["Capabilities", "Mode", "QueryFilter", "STORES", "Store", "StoreBusyError", "StoreDamagedError", "StoreSpec",
           "all_modes", "open_store", "register_store", "store_spec", "unregister_store"]
