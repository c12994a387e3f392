"""Sub-commands of the ``diffumamba`` command line; each module adds its own parser."""
