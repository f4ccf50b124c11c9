"""What tests and harnesses plug into the real runtime (never a real manifest): the probe variant."""
