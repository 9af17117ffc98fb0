"""Evaluation of trained EBMs: everything in the JEM paper's results section."""
