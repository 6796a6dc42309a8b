"""The fleet's controller: one elected leader acting on host failure."""
