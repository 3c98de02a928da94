"""Control at the edge: IEEE 1547-2018 DER functions, the capacitor bank, the regulator, CVR, all behind one
safety envelope (docs/control.md).

ieee1547     the standard's default settings, one cited table, one pure function per curve
config       the site file's [control] section, checked whole
decision     the frozen records every function, the envelope and the audit stream share
view         the snapshot as a function sees it: inputs with their age and quality
capbank      the capacitor bank function: a pure decide()
actuators    device adapters: the command, its readback, the hand-back to the autonomous state
envelope     the one gate every write passes, with its persisted state
controller   the time-scale layers that run the functions and hand their decisions to the envelope
wiring       control's part of the composition root: links, actuators (handed to the envelope), functions
operator     what an operator does to the envelope's persisted state (list, clear a suspension)
"""
