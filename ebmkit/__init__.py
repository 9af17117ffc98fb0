"""ebmkit: Joint Energy-based Models (JEM) and friends for TensorFlow/Keras."""

# Importing the package registers every configurable with gin, so a .gin file
# needs only `import ebmkit`.
from ebmkit import configurables
from ebmkit import data
from ebmkit import train
from ebmkit.buffer import ReplayBuffer
from ebmkit.energy import EnergyHead
from ebmkit.energy import ScalarEnergyHead
from ebmkit.models import EnergyModel
from ebmkit.sampling import LangevinSampler

__version__ = "0.1.0"
