"""The optimizers the `client_optimizer` and `server_optimizer` config groups name: `tff.learning.optimizers`
builders with their keys spelled as in the yaml files.

Epsilon on the server. Reddi et al. 2021 add an "adaptivity" tau to the denominator, sqrt(v) + tau, and
recommend tau = 1e-3 (google-research/federated, optimization/docs/hyperparameters.md); Keras' and TFF's
client-side default of 1e-7 makes the server's step on a coordinate whose average update is ~0 almost
lr * sign(update), far larger than intended for model deltas, which are small and shrink as training
converges. fedlab's server adam, yogi and rmsprop therefore default to epsilon 1e-3; TFF's adagrad adds its
epsilon inside the square root, sqrt(v + epsilon), so its default is 1e-6, the same tau of 1e-3. The EMNIST
presets (experiment=fedadam, ...) use the tuned values of that table.
"""

import tensorflow_federated as tff


def sgd(learning_rate: float, momentum: float = 0.0) -> tff.learning.optimizers.Optimizer:
    """SGD, with heavy-ball momentum when `momentum` > 0 (tff.learning.optimizers.build_sgdm)."""
    return tff.learning.optimizers.build_sgdm(learning_rate=learning_rate, momentum=momentum or None)


def adam(
    learning_rate: float, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7
) -> tff.learning.optimizers.Optimizer:
    """Adam with bias correction, w -= lr_t * m / (sqrt(v) + epsilon) (tff.learning.optimizers.build_adam)."""
    return tff.learning.optimizers.build_adam(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)


def yogi(
    learning_rate: float,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-3,
    initial_preconditioner_value: float = 1e-6,
) -> tff.learning.optimizers.Optimizer:
    """Yogi (Zaheer et al. 2018): Adam with an additive second-moment update (tff.learning.optimizers.build_yogi)."""
    return tff.learning.optimizers.build_yogi(
        learning_rate,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        initial_preconditioner_value=initial_preconditioner_value,
    )


def adagrad(
    learning_rate: float, epsilon: float = 1e-7, initial_preconditioner_value: float = 0.1
) -> tff.learning.optimizers.Optimizer:
    """Adagrad, w -= lr * g / sqrt(v + epsilon): epsilon inside the root (tff.learning.optimizers.build_adagrad)."""
    return tff.learning.optimizers.build_adagrad(
        learning_rate, initial_preconditioner_value=initial_preconditioner_value, epsilon=epsilon
    )


def rmsprop(learning_rate: float, decay: float = 0.9, epsilon: float = 1e-7) -> tff.learning.optimizers.Optimizer:
    """RMSProp, w -= lr * g / (sqrt(v) + epsilon) (tff.learning.optimizers.build_rmsprop)."""
    return tff.learning.optimizers.build_rmsprop(learning_rate, decay=decay, epsilon=epsilon)
