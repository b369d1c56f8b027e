"""Policies behind a registry: each is a `kind`-tagged pydantic config plus a Policy class.

Importing this package registers every built-in policy; a new one registers itself in its module
and is imported here.
"""

from edgevlm.sim.policies import two_stage  # noqa: F401  (registers global_only, always_crop, entropy_threshold)
from edgevlm.sim.policies import adaptive, full_cloud, oracle, progressive, random_retransmit  # noqa: F401
from edgevlm.sim.policies import full_edge  # noqa: F401  (registers full_edge)
from edgevlm.sim.policies.base import ImagePolicyConfig, Policy, PolicyConfig, TwoStagePolicy, policies

__all__ = ["ImagePolicyConfig", "Policy", "PolicyConfig", "TwoStagePolicy", "policies"]
