"""The power-quality chain's input error, in a module of its own: the site file's checks (agent/pq/config.py) raise
it without importing the chain's numpy and scipy, which the agent's own process never loads (agent/pq/worker.py)."""


class PqInputError(ValueError):
    """Bad input to a power-quality function: the message names the argument, the value and what is allowed."""
