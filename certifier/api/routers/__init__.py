"""The v1 routers, one module per resource; :mod:`certifier.api.app` mounts them."""
