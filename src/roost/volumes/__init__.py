"""Volumes: size-limited ext4 filesystems kept as image files on one host."""
