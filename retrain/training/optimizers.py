"""Update rules and learning-rate schedules for both training stages (the head; top blocks + head), as TensorFlow ops.

The head trains inside one compiled ``tf.while_loop`` (see head.py), where
Keras optimizers do not fit: they keep Python-side state and cost dozens of
ops per step. Each rule here is a few ops per variable; Adam is TensorFlow's
fused kernel (moments and update in one pass over a variable, not ten
element-wise ops that each read and write all of it: the top blocks that
fine-tuning trains hold millions of weights).

Plain SGD folds the learning rate into the loss gradient before it is
back-propagated (one multiply instead of one per variable), which also keeps
the default run bit-identical to the Poets-style loop this project started
with. Weight decay is decoupled from the gradient (AdamW-style): with SGD it
equals an L2 penalty, with Adam it still shrinks every weight at the same
rate, which an L2 penalty would not.
"""
from __future__ import annotations

import math
from typing import Sequence

OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "cosine")
MOMENTUM = 0.9
# Kingma & Ba's defaults, as in Keras.
ADAM_BETA_1 = 0.9
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-7


def learning_rate_at(base: float, schedule: str, step, total_steps: int, warmup_steps: int = 0):
    """The learning rate at a step: after a linear warm-up, constant or cosine-annealed towards 0.

    Args:
        base: the peak learning rate.
        schedule: one of ``SCHEDULES``.
        step: a scalar tensor counting from 0.
        total_steps: the run's steps, warm-up included; cosine reaches 0 one step after the last.
        warmup_steps: the first steps, whose rate rises linearly to ``base`` (``base / warmup_steps`` at step 0);
            cosine decay starts after them. 0 (the head's case) adds no op.

    Returns:
        The rate, a float32 scalar tensor.
    """
    import tensorflow as tf
    rate = tf.constant(base, tf.float32)
    if schedule == "cosine":
        after_warmup = tf.cast(step, tf.float32) - warmup_steps if warmup_steps else tf.cast(step, tf.float32)
        progress = after_warmup / float(max(total_steps - warmup_steps, 1))
        rate = rate * 0.5 * (1.0 + tf.cos(math.pi * progress))
    if warmup_steps:
        warming = tf.cast(step, tf.float32) + 1.0
        rate = tf.where(warming <= warmup_steps, base * warming / warmup_steps, rate)
    return rate


class Optimizer:
    """One update rule over a stage's variables; slot variables are created up front, outside the loop.

    Args:
        name: one of ``OPTIMIZERS``.
        variables: the ``tf.Variable``s it updates.
        decayed: per variable, whether ``weight_decay`` shrinks it (weights and kernels do, biases and
            batch-norm offsets and scales do not).
        weight_decay: decoupled weight decay per unit of learning rate (0: none).
    """

    def __init__(self, name: str, variables: Sequence, decayed: Sequence[bool], weight_decay: float):
        import tensorflow as tf
        self.name = name
        self.variables = list(variables)
        self.decayed = list(decayed)  # weight matrices decay, biases do not
        self.weight_decay = weight_decay
        slots = {"sgd": 0, "momentum": 1, "adam": 2}[name]
        self.slots = [[tf.Variable(tf.zeros_like(v), trainable=False) for _ in range(slots)] for v in self.variables]

    @property
    def folds_learning_rate(self) -> bool:
        """True when the caller must scale the loss gradient by the learning rate (plain SGD)."""
        return self.name == "sgd"

    def updates(self, gradients: Sequence, learning_rate, step) -> list:
        """Ops that apply one step's ``gradients`` (``step`` counts from 0)."""
        import tensorflow as tf
        ops = []
        if self.name == "adam":
            t = tf.cast(step, tf.float32) + 1.0
            beta_1_power, beta_2_power = tf.pow(ADAM_BETA_1, t), tf.pow(ADAM_BETA_2, t)
        for variable, gradient, slots, decayed in zip(self.variables, gradients, self.slots, self.decayed):
            decay = learning_rate * self.weight_decay * variable if decayed and self.weight_decay > 0 else None
            if self.name == "adam":
                # the fused kernel takes no decay term: shrink the weights first, then apply Adam's step
                with tf.control_dependencies([] if decay is None else [variable.assign_sub(decay)]):
                    ops.append(tf.raw_ops.ResourceApplyAdam(
                        var=variable.handle, m=slots[0].handle, v=slots[1].handle, beta1_power=beta_1_power,
                        beta2_power=beta_2_power, lr=learning_rate, beta1=ADAM_BETA_1, beta2=ADAM_BETA_2,
                        epsilon=ADAM_EPSILON, grad=gradient))
                continue
            if self.name == "sgd":
                change = gradient  # already scaled by the learning rate
            else:
                change = learning_rate * slots[0].assign(MOMENTUM * slots[0] + gradient)
            ops.append(variable.assign_sub(change if decay is None else change + decay))
        return ops
