"""Talking to the running music player (MPRIS over D-Bus): what plays now, and a playlist handed over."""
