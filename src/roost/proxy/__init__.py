"""The edge proxy: routing, balancing, autostart, autostop."""
