"""The campaign, in the guest as root: the fault loop and its phases, the IO (one fio stream
cut into windows, passthrough readers, the stale-write check), the kernel log and the race
witnesses, the BPF widener, fault sequences ([[steps]]), verdicts and the floor timings. May
import the guest layers below it: ``config``, ``faults``, ``bed``, ``core``.
"""
