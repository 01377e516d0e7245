"""L-inf attacks on models that take [0, 1] inputs and return logits.

Every attack runs the model in eval mode and restores each module's mode afterwards, never sets
``requires_grad`` on parameters and never writes their ``.grad`` (input gradients only, through
``torch.autograd.grad``).
"""
from robaudit.attacks.ascent import signed_ascent
from robaudit.attacks.autoattack import STAGES as AUTOATTACK_STAGES
from robaudit.attacks.autoattack import run_autoattack, run_stage
from robaudit.attacks.common import default_alpha, eval_mode
from robaudit.attacks.fgsm import fgsm
from robaudit.attacks.noise import random_noise
from robaudit.attacks.pgd import PGDResult, pgd
from robaudit.attacks.transfer import last_iterate, transfer

__all__ = ["AUTOATTACK_STAGES", "PGDResult", "run_autoattack", "default_alpha", "eval_mode", "fgsm", "last_iterate",
           "pgd", "random_noise", "run_stage", "signed_ascent", "transfer"]
