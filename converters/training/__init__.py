"""On-device training: turn an inference graph into a trainable one.

    from edgerun.converters.training import make_trainable
    train_graph = make_trainable(graph, loss="cross_entropy", optimizer=("sgd", {"lr": 0.1}))
"""

from edgerun.converters.training.trainable import LOSSES, OPTIMIZERS, Optimizer, make_trainable

__all__ = ["LOSSES", "OPTIMIZERS", "Optimizer", "make_trainable"]
