"""Package discovery: export/, quant/ and firmware/ live at the top of the repository but install as
lumamba.export (with its stage subpackages onnx, codegen, project), lumamba.quant and
lumamba.firmware, so no top-level `export` or `quant` package
lands in site-packages. Everything else is in pyproject.toml."""
from setuptools import find_packages, setup

MAPPED = {"lumamba.export": "export", "lumamba.quant": "quant", "lumamba.firmware": "firmware"}


def _mapped_packages() -> list[str]:
    """Each mapped folder and its subpackages (export/onnx -> lumamba.export.onnx, ...)."""
    return [name for name, folder in MAPPED.items()
            for name in (name, *(f"{name}.{sub}" for sub in find_packages(folder)))]


setup(
    packages=["lumamba", *("lumamba." + p for p in find_packages("lumamba")), *_mapped_packages()],
    package_dir={"lumamba": "lumamba", **MAPPED},
)
