"""Media logic: probe, ladder planning, ffmpeg arguments, encode, publish gate. No AWS."""
