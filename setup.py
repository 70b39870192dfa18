"""Package discovery: export/, quant/ and firmware/ live at the top of the repository but install as
lumamba.export, lumamba.quant and lumamba.firmware, so no top-level `export` or `quant` package
lands in site-packages. Everything else is in pyproject.toml."""
from setuptools import find_packages, setup

MAPPED = {"lumamba.export": "export", "lumamba.quant": "quant", "lumamba.firmware": "firmware"}

setup(
    packages=["lumamba", *("lumamba." + p for p in find_packages("lumamba")), *MAPPED],
    package_dir={"lumamba": "lumamba", **MAPPED},
)
