"""The labs' Jupyter kernel, "Python 3 (enilab)": ipykernel that builds real namespaces for a normal user too.

As root it is ipykernel and nothing else. Run by a normal user (or with ENILAB_ROOTLESS=1), it first moves
into a user and mount namespace of the user's own (eni_core/userns.py), while it is still one thread, as the
kernel requires; it stays in the host's network namespace until its channels are bound, because Jupyter
reaches them on the host's loopback. Then the thread that runs the cells takes a network namespace of its
own as its home: the user is root there, so a lab builds its cluster on real namespaces, reads the kernel's
rules and routes and captures packets exactly as root does, and everything it made ends with the kernel.
Where user namespaces are refused the kernel still starts, and the labs say why they run on the simulator.
A cell that reads a name no cell has made yet (the kernel restarted, a cell run from the middle) says in one
line to run the cells above, not with a traceback.

Jupyter finds this kernel through `share/jupyter/kernels/enilab/kernel.json` in the environment's prefix
(testbed/apps/kernelspec/: a wheel installs it there, `make setup` too); the labs ask for it by name.
"""
from __future__ import annotations

import os
import sys

from eni_core import userns

__all__ = ["REFUSED", "main", "not_yet"]

REFUSED = "ENILAB_LABS_ROOTLESS_ERROR"  # why the kernel could not go rootless, for the labs to say


def not_yet(err: NameError) -> str:
    """What to do when a cell reads a name that a cell above has not made yet."""
    return f"{err}: run the cells above this one first (after a kernel restart, from the top)"


def _name_not_made_yet(shell, etype, value, tb, tb_offset=None) -> None:
    """IPython's handler of NameError, which shows the error itself: one line when the cell's own code reads the
    name; the usual traceback when it is missing deeper down (a bug in a module)."""
    last = tb
    while last.tb_next is not None:
        last = last.tb_next
    if etype is NameError and shell.compile.format_code_name(last.tb_frame.f_code.co_filename) is not None:
        shell._showtraceback(etype, value, [f"{etype.__name__}: {not_yet(value)}"])
    else:
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)


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
    app.shell.set_custom_exc((NameError,), _name_not_made_yet)
    if rootless:
        try:
            userns.own_network()
        except OSError as err:  # root of a user namespace with no network of its own must not build clusters
            os.environ[REFUSED] = str(err)
    app.start()


if __name__ == "__main__":
    main()
