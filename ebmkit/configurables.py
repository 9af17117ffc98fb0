"""Registers every ebmkit configurable with gin, in one place.

`@gin.configurable` on a Keras 3 Layer/Model crashes at construction, so the
Keras classes a config builds (ebmkit's and the Keras built-ins) are
registered here with `gin.external_configurable`. Plain functions carry
`@gin.configurable` where they are defined; importing their modules here
registers them, so that `import ebmkit` is all a .gin file needs.
"""

import gin
import keras

from ebmkit.data import pipeline as data  # pylint: disable=unused-import
from ebmkit.evaluation import evaluate  # pylint: disable=unused-import
from ebmkit.gan import model as gan
from ebmkit.gan import networks as gan_networks  # pylint: disable=unused-import
from ebmkit.models import buffer
from ebmkit.models import energy_model as models
from ebmkit.models import heads as energy
from ebmkit.models import mcmc
from ebmkit.models import sampling
from ebmkit.networks import backbones  # pylint: disable=unused-import
from ebmkit.training import experiment  # pylint: disable=unused-import
from ebmkit.training import sam
from ebmkit.training import schedules
from ebmkit.training import train  # pylint: disable=unused-import

for _cls in (models.EnergyModel, energy.EnergyHead, energy.ScalarEnergyHead,
             buffer.ReplayBuffer, sampling.LangevinSampler, mcmc.MCMCSampler,
             schedules.WarmupStepDecay, gan.GAN, sam.SAM):
  gin.external_configurable(_cls, module="ebmkit")

for _cls in (keras.optimizers.Adam, keras.optimizers.AdamW,
             keras.optimizers.SGD, keras.optimizers.RMSprop):
  gin.external_configurable(_cls, module="keras.optimizers")

for _cls in (keras.optimizers.schedules.PiecewiseConstantDecay,
             keras.optimizers.schedules.CosineDecay,
             keras.optimizers.schedules.ExponentialDecay):
  gin.external_configurable(_cls, module="keras.optimizers.schedules")
