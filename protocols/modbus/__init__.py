"""Modbus register maps, read plans and TCP/RTU clients. Knows nothing of the agent."""
