"""Click correction of a GTV: simulated users, the network's extra inputs, and correcting on an image's grid.

Layering: uses ``inference`` (sliding window) and ``data`` (preprocessing); ``training`` uses it for its simulated
clicks; it never imports ``training`` or ``propagation``.
"""
