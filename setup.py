"""Package layout that pyproject.toml alone cannot say: the top-level `resources/` folder is
installed as the package `app.resources`, so its data travels in the wheel and the sdist, and
nothing named `resources` is dropped into site-packages. Everything else is in pyproject.toml."""
from setuptools import find_packages, setup

# resources/demo and resources/icons hold only data; they are listed as (namespace) packages so
# that setuptools carries their files without warning that Python could import them.
RESOURCE_DATA = {
    "app.resources": ["catalog.json"],
    "app.resources.demo": ["*.bin", "tokenizer.json", "README.md"],
    "app.resources.icons": ["*.png"],
}

setup(
    packages=find_packages(include=["engine", "engine.*", "app", "app.*"]) + list(RESOURCE_DATA),
    package_dir={"app.resources": "resources"},
    package_data=RESOURCE_DATA,
)
