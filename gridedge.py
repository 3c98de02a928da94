"""The one ``gridedge`` command: hands ``sim …`` to sim_hw's CLI, ``central …`` to central's, ``demo``
to the demo runner, ``pq …`` to the power-quality tools and the rest to the agent's, so the three packages
never import each other."""

from __future__ import annotations

import os
import signal
import sys

# The simulator's dependencies, installed only with the extra: ``pip install 'gridedge[sim]'``.
SIM_EXTRA_MODULES = ("opendssdirect", "opender", "dss")
EXIT_MISSING_EXTRA = 3


def _missing_sim_extra(err: ModuleNotFoundError, command: str) -> int:
    print(
        f"gridedge {command}: needs the simulator's dependencies ({err.name} is not installed): "
        "pip install 'gridedge[sim]'",
        file=sys.stderr,
    )
    return EXIT_MISSING_EXTRA


def _dispatch(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    head = args[0] if args else ""
    if head in ("sim", "demo"):
        # The agent runs from a plain install; the bench (and the demo, which runs it) needs the extra.
        try:
            if head == "sim":
                from sim_hw.cli import main as sim_main

                return sim_main(args[1:])
            from gridedge_demo import main as demo_main

            return demo_main(args[1:])
        except ModuleNotFoundError as err:
            if (err.name or "").split(".")[0] not in SIM_EXTRA_MODULES:
                raise
            return _missing_sim_extra(err, head)
    if head == "central":
        from central.cli import main as central_main

        return central_main(args[1:])
    if head == "pq":
        from agent.pq.offline.cli import main as pq_main

        return pq_main(args[1:])
    from agent.cli import main as agent_main

    return agent_main(args)


def main(argv: list[str] | None = None) -> int:
    """The console script; quiet when its reader goes away (``gridedge check-config F | head``)."""
    try:
        code = _dispatch(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # Python's documented recipe: point stdout at /dev/null so the interpreter's last flush does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
