"""Fault-injection harness: real worker processes, real ffmpeg, the emulator, and the assertions."""
