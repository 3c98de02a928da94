"""SunSpec over Modbus: discovery, live scale factors, reads and writes with readback (docs/sunspec.md).

- :mod:`~protocols.sunspec.layout`: pysunspec2's model definitions laid out as register points (shared with the
  bench's simulated inverters).
- :mod:`~protocols.sunspec.discovery`: sans-IO discovery (the SunS marker, the model chain, counts, model 1).
- :mod:`~protocols.sunspec.values`: raw registers <-> engineering values with the SFs read in the same poll.
- :mod:`~protocols.sunspec.write`: sans-IO write planning (function-16 requests) and the readback's verdict.
- :mod:`~protocols.sunspec.client`: the thin async layer over a :mod:`protocols.modbus` transport.
"""
