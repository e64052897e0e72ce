"""The labs' Jupyter kernel, "Python 3 (enilab)": ipykernel that builds real namespaces for a normal user too.

As root it is ipykernel and nothing else. Run by a normal user (or with ENILAB_ROOTLESS=1), it first moves
into a user and mount namespace of the user's own (eni_core/userns.py), while it is still one thread, as the
kernel requires; it stays in the host's network namespace until its channels are bound, because Jupyter
reaches them on the host's loopback. Then the thread that runs the cells takes a network namespace of its
own as its home: the user is root there, so a lab builds its cluster on real namespaces, reads the kernel's
rules and routes and captures packets exactly as root does, and everything it made ends with the kernel.
Where user namespaces are refused the kernel still starts, and the labs say why they run on the simulator.

Jupyter finds this kernel through `share/jupyter/kernels/enilab/kernel.json` in the environment's prefix
(testbed/apps/kernelspec/: a wheel installs it there, `make setup` too); the labs ask for it by name.
"""
from __future__ import annotations

import os
import sys

from eni_core import userns

__all__ = ["REFUSED", "main"]

REFUSED = "ENILAB_LABS_ROOTLESS_ERROR"  # why the kernel could not go rootless, for the labs to say


def main(argv: list[str] | None = None) -> None:
    """Start the kernel (Jupyter passes `-f CONNECTION_FILE`), rootless when not root."""
    rootless = userns.wanted()
    if rootless:
        try:
            userns.enter(network=False)
        except OSError as err:  # RootlessError, or a private folder that is not the user's
            os.environ[REFUSED] = str(err)
            rootless = False
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.initialize(sys.argv[1:] if argv is None else argv)
    if rootless:
        try:
            userns.own_network()
        except OSError as err:  # root of a user namespace with no network of its own must not build clusters
            os.environ[REFUSED] = str(err)
    app.start()


if __name__ == "__main__":
    main()
