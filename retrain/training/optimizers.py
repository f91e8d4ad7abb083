"""Update rules and learning-rate schedules for the head (the schedules for stage two too), as plain TensorFlow ops.

The head trains inside one compiled ``tf.while_loop`` (see head.py), where
Keras optimizers do not fit: they keep Python-side state and cost dozens of
ops per step. Each rule here is a few ops per variable.

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
    """One update rule over the head's variables; slot variables are created up front, outside the loop."""

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
            adam_rate = learning_rate * tf.sqrt(1.0 - ADAM_BETA_2 ** t) / (1.0 - ADAM_BETA_1 ** t)
        for variable, gradient, slots, decayed in zip(self.variables, gradients, self.slots, self.decayed):
            if self.name == "sgd":
                change = gradient  # already scaled by the learning rate
            elif self.name == "momentum":
                velocity = slots[0].assign(MOMENTUM * slots[0] + gradient)
                change = learning_rate * velocity
            else:
                first = slots[0].assign(ADAM_BETA_1 * slots[0] + (1.0 - ADAM_BETA_1) * gradient)
                second = slots[1].assign(ADAM_BETA_2 * slots[1] + (1.0 - ADAM_BETA_2) * tf.square(gradient))
                change = adam_rate * first / (tf.sqrt(second) + ADAM_EPSILON)
            if decayed and self.weight_decay > 0:
                change = change + learning_rate * self.weight_decay * variable
            ops.append(variable.assign_sub(change))
        return ops
