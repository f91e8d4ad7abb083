"""retrain: train a new softmax layer on top of a frozen ImageNet backbone.

The pipeline, one module a stage, data flowing one way (README's code map):

    images -> backbones -> bottlenecks (cache_store) -> batches -> head -> metrics -> export
    labeler -> evaluation / relabel
"""
__version__ = "0.1.0"
