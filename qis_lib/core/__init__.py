"""The routing core: packets, the router, store urls."""
