"""TFDS builders for the data sets that ship with ebmkit's dependencies.

Importing this package registers them with tensorflow-datasets.
"""

from ebmkit.data.datasets.mixture import GaussianMixture25
from ebmkit.data.datasets.sklearn_digits import SklearnDigits

EMBEDDED = ("sklearn_digits", "gaussian_mixture25")
