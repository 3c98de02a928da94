"""The one ``gridedge`` command: hands ``sim …`` to sim_hw's CLI, ``central …`` to central's, ``demo``
to the demo runner, ``pq …`` to the power-quality tools and the rest to the agent's, so the three packages
never import each other."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    head = args[0] if args else ""
    if head == "sim":
        from sim_hw.cli import main as sim_main

        return sim_main(args[1:])
    if head == "central":
        from central.cli import main as central_main

        return central_main(args[1:])
    if head == "pq":
        from agent.pq.cli import main as pq_main

        return pq_main(args[1:])
    if head == "demo":
        from agent.demo import main as demo_main

        return demo_main(args[1:])
    from agent.cli import main as agent_main

    return agent_main(args)


if __name__ == "__main__":
    sys.exit(main())
