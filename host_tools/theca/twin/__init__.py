"""The digital twin: the firmware on the MicroPython unix port, simulated or live on a pty."""
