"""The PQ tools for recorded waveform files, apart from the agent's live service: ``gridedge pq analyze`` and
``gridedge pq report`` (docs/pq-report.md).

``recording`` (COMTRADE and CSV files), ``analyze`` (the Class A chain and the flickermeter over a file, the JSON
document), ``text`` (the text reports), ``plot`` (the ``--plot`` picture; needs matplotlib, the ``plot`` extra),
``cli`` (the commands).
"""
