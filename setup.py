"""Package layout (the metadata is in pyproject.toml).

Subpackages are found by `find_packages`, so a new one cannot be left out of
the wheel; the shipped .gin files (top-level gin/) become ebmkit/configs, and
the shipped presets (ebmkit/preset_files/<name>/) go in as package data.
"""

import setuptools

setuptools.setup(
    packages=setuptools.find_packages(include=["ebmkit", "ebmkit.*"])
    + ["ebmkit.configs"],
    package_dir={"ebmkit.configs": "gin"},
    package_data={"ebmkit.configs": ["*.gin", "**/*.gin"],
                  "ebmkit": ["preset_files/*/*"]},
    include_package_data=True,
)
