"""Feature Scattering and baseline adversarial training (``robaudit train``).

    from robaudit.training import TrainConfig, train
    result = train(TrainConfig(method="feature-scatter", dataset="mnist10k", epochs=5), "runs/fs")
    result.checkpoint  # runs/fs/model.safetensors, loadable with robaudit.load_model
"""
from robaudit.training.config import TrainConfig
from robaudit.training.methods import METHODS
from robaudit.training.trainer import TrainProgress, TrainResult, train

__all__ = ["TrainConfig", "train", "TrainResult", "TrainProgress", "METHODS"]
