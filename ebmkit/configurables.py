"""gin registrations for Keras classes, in one place.

`@gin.configurable` on a Keras 3 Layer/Model crashes at construction, so the
Keras classes (ebmkit's and the Keras built-ins a config needs) are registered
here with `gin.external_configurable`. Plain functions carry
`@gin.configurable` where they are defined.
"""

import gin
import keras

from ebmkit import buffer
from ebmkit import energy
from ebmkit import models
from ebmkit import backbones
from ebmkit import sampling
from ebmkit import schedules

for _cls in (models.EnergyModel, energy.EnergyHead, energy.ScalarEnergyHead,
             buffer.ReplayBuffer, sampling.LangevinSampler,
             schedules.WarmupStepDecay, backbones.WideResNet,
             backbones.IGEBMResNet):
  gin.external_configurable(_cls, module="ebmkit")

for _cls in (keras.optimizers.Adam, keras.optimizers.AdamW,
             keras.optimizers.SGD, keras.optimizers.RMSprop):
  gin.external_configurable(_cls, module="keras.optimizers")

for _cls in (keras.optimizers.schedules.PiecewiseConstantDecay,
             keras.optimizers.schedules.CosineDecay,
             keras.optimizers.schedules.ExponentialDecay):
  gin.external_configurable(_cls, module="keras.optimizers.schedules")
