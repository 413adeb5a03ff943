"""The PBS center type (OpenPBS, PBS Pro and the Torque dialect)."""
