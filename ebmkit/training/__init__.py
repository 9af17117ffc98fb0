"""Training: the runner (train), Keras callbacks (callbacks), checkpoints and rollback targets
(checkpoints), recovery from divergence (recovery), learning-rate schedules (schedules) and
assembling a model from gin (experiment).
"""
