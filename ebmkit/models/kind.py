"""What training, evaluation, export and the callbacks ask of a model: one
small interface that every model kind (`EnergyModel`, `GAN`) answers for
itself, so that no caller asks which class a model is.

The defaults describe a model with none of the optional parts; a kind
overrides what it has.
"""

from ebmkit import preset_format


class ModelKind:
  """The interface of a model kind ebmkit trains, evaluates and exports.

  Attributes:
    classifies: it has classes: p(y|x), accuracy, calibration, PGD and the
      classifier's evaluation parts.
    draws_samples: training draws SGLD samples (a p(x) or p(x|y) term).
    generates: it generates from a latent code (G(z)), and DDLS samples its
      latent energy; evaluation compares the two.
    replay_buffer: its persistent SGLD chains (`ReplayBuffer`), or None.
    sample_shape: the shape of one example (an image), once built.
    data_range: the data's (low, high), inputs are checked against it; None
      for no range check.
    trains_distributed: `train.distribute` can train it on several replicas.
    other_optimizers: optimizers besides `optimizer` whose state a
      checkpoint keeps.
    needs_calibration: export first calibrates it on training images
      (`calibrate_discriminator`).
  """

  classifies = False
  draws_samples = False
  generates = False
  replay_buffer = None
  sample_shape = None
  data_range = None
  trains_distributed = False
  other_optimizers = ()
  needs_calibration = False  # A GAN's D must be a logit before DDLS.

  def needs_informative_init(self):
    """Whether training fits the buffer's start distribution to the data."""
    return False

  def sample_grid(self, num_images=64):
    """A uint8 image grid of what the model samples (its buffer, or G(z))."""
    raise NotImplementedError(f"{type(self).__name__}.sample_grid")

  def serving_signatures(self, detection=False):
    """The names of the SavedModel signatures it exports
    (`ebmkit.serving.signatures`); `detection`: a detection threshold was
    calibrated."""
    raise NotImplementedError(f"{type(self).__name__}.serving_signatures")

  def export_parts(self):
    """The trackables a SavedModel of it holds."""
    return [self]

  def export_metadata(self, data_range=None, detection=None):
    """Facts about its exported signatures' inputs and outputs, for the
    export's metadata file; `data_range` is the range the export checks
    inputs against, `detection` its calibrated threshold (or None)."""
    raise NotImplementedError(f"{type(self).__name__}.export_metadata")

  def save_to_preset(self, path, card=None, operative_config=None,
                     buffer_bits=None):
    """Writes this built model as a preset folder, which
    `ebmkit.from_preset(path)` loads back (weights, replay buffer and
    random states as they are now). `card`: a dict of what the card says;
    `operative_config`: the gin config that trained it; `buffer_bits=8`
    stores the replay buffer at 8 bits (`preset_format.write`). Returns
    `path`."""
    return preset_format.write(self, path, card, operative_config,
                               buffer_bits)
