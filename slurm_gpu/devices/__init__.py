"""GPU driver adapters: the interface (``api``), NVML (``nvml``), the simulated NVML (``simnvml`` over
``simstate``), device files and cgroups (``access``); ``open.open_driver`` picks one from the configuration.

Submodules are imported by name: nothing here loads pynvml or the simulator (hooks import this package).
"""
