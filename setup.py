"""Which packages the wheel holds, found rather than listed: every folder of leapkit/, and profiles/ (the shipped
recipes and target profiles) inside it as ``leapkit._profiles``. Everything else is in pyproject.toml.

tests/test_packaging.py builds the wheel and fails when a file of leapkit/ or profiles/ is not in it.
"""

from setuptools import find_namespace_packages, setup

PROFILES = "leapkit._profiles"
NOT_PACKAGES = ["*__pycache__*"]

packages = find_namespace_packages(include=["leapkit", "leapkit.*"], exclude=NOT_PACKAGES)
packages += [PROFILES, *(f"{PROFILES}.{name}" for name in find_namespace_packages("profiles", exclude=NOT_PACKAGES))]

setup(packages=packages, package_dir={PROFILES: "profiles"})
