"""The energy-based model and its parts: `EnergyModel` (energy_model), the energy heads (heads),
the replay buffer (buffer), the Langevin sampler (sampling), the objective's terms (objective), what
the model reports to Keras (metrics), what a valid input batch is (validation), the model's state per
`tf.distribute` replica (replicas) and the four uses of a trained model (inference).
"""
