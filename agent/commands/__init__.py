"""The downlink at the agent: signed commands from central verified, carried out through the safety envelope,
answered with signed results, audited (docs/commands.md).

config   the ``[commands]`` section: the agent's key, the keys it trusts and their roles, skew, link loss
verify   the checks in order: signature, role, audience, sequence, window, id
execute  commands -> decisions through the envelope; what they hold in force (slots), schedules, fallbacks
service  the task: the cmd topic, one message at a time, results and audit in the store, expiries, link loss
"""
