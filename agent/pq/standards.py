"""The names of the standards power quality is assessed against (agent/pq/compliance has their limits).

Apart from the compliance package, whose assessment needs numpy, so that the site file's checks
(agent/pq/config.py) name them without importing numpy, which the agent's own process never loads
(agent/pq/worker.py).
"""

STANDARDS = ("en50160-lv", "en50160-mv", "ieee519")  # EN 50160:2010 clause 4 (LV), clause 5 (MV); IEEE 519-2014
