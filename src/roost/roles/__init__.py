"""The processes roost runs as.

``roost server`` (``roost.server``) is the whole platform for one host in one process.
A fleet runs the same parts as separate processes over etcd: ``roost api`` (the API
and the elected controller), ``roost agent`` (one per host: its machines, and an
endpoint the API reaches them through) and ``roost proxy`` (one per host).
"""
