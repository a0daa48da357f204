"""Testbed drivers behind one interface (:mod:`.base`): ``netns`` namespaces, ``local`` loopback."""
