"""The process layer: spawn helper, process groups, capture, process identity, descriptor limits."""
