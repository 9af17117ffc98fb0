"""Training with `tf.distribute`: choosing the strategy and its checks (strategy) and ebmkit's own
loop for multi-worker training (worker_loop). The per-replica state the model keeps is in
`ebmkit.models.replicas`.
"""
