"""ebmkit: Joint Energy-based Models (JEM) and friends for TensorFlow/Keras."""

import os

# TensorFlow's C++ start-up INFO lines (oneDNN, CUDA probing) bury the progress
# bar; set TF_CPP_MIN_LOG_LEVEL=0 to see them. Must precede importing TF.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Importing the package registers every configurable with gin, so a .gin file
# needs only `import ebmkit`.
#
# Where things live (one sub-package per concept):
#   models/       the energy model, its heads, replay buffer, Langevin sampler,
#                 objective, metrics, valid inputs, per-replica state, the four uses
#   networks/     backbones (WRN, convnets, MLPs)
#   gan/          the GAN, its networks, and DDLS (its latent energy)
#   data/         input pipelines and the TFDS builders ebmkit ships
#   training/     the runner, callbacks, checkpoints, recovery, schedules and
#                 assembling a model from gin
#   distribute/   tf.distribute: strategies and the multi-worker loop
#   evaluation/   everything in the JEM paper's results section
#   serving/      SavedModel export, one function per signature
#   convert/      the reference PyTorch checkpoint converter
# and at the top: the command line (run), gin registration (configurables,
# gin_utils), and what everything shares (compat, progress, images, the
# workdir's layout).
from ebmkit import configurables
from ebmkit.data.pipeline import load_dataset
from ebmkit.evaluation.ood import energy_score
from ebmkit.gan.model import GAN
from ebmkit.models.buffer import ReplayBuffer
from ebmkit.models.energy_model import EnergyModel
from ebmkit.models.heads import EnergyHead
from ebmkit.models.heads import ScalarEnergyHead
from ebmkit.models.mcmc import MCMCSampler
from ebmkit.models.sampling import LangevinSampler
from ebmkit.presets import from_preset
from ebmkit.presets import list_presets
from ebmkit.presets import save_to_preset
from ebmkit.serving.export import export
from ebmkit.serving.export import export_workdir
from ebmkit.training.experiment import load_model
from ebmkit.training.sam import SAM
from ebmkit.training.train import train

__version__ = "0.1.0"
