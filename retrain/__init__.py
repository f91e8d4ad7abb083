"""retrain: train a new softmax layer on top of a frozen ImageNet backbone.

The pipeline, one module a stage, data flowing one way:

    images -> architectures/backbones -> bottlenecks -> head -> metrics -> export -> labeler
"""
__version__ = "0.1.0"
