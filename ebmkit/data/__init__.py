"""Data: input pipelines over tensorflow-datasets (pipeline) and the TFDS builders ebmkit ships or
prepares offline (datasets).
"""
