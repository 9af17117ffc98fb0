"""ebmkit: Joint Energy-based Models (JEM) and friends for TensorFlow/Keras."""

import os

# TensorFlow's C++ start-up INFO lines (oneDNN, CUDA probing) bury the progress
# bar; set TF_CPP_MIN_LOG_LEVEL=0 to see them. Must precede importing TF.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Importing the package registers every configurable with gin, so a .gin file
# needs only `import ebmkit`.
from ebmkit import configurables
from ebmkit import data
from ebmkit import train
from ebmkit.buffer import ReplayBuffer
from ebmkit.energy import EnergyHead
from ebmkit.energy import ScalarEnergyHead
from ebmkit.experiment import load_model
from ebmkit.gan import GAN
from ebmkit.models import EnergyModel
from ebmkit.sampling import LangevinSampler
from ebmkit.serving import export
from ebmkit.serving import export_workdir

__version__ = "0.1.0"
