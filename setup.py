"""Packaging beyond ``pyproject.toml``: the repository's ``configs/`` ship inside the package as
``uper_parsing/configs``, where ``uper_parsing.model_zoo.get_config_file`` finds them once
installed (in a checkout it reads ``configs/`` itself). Each config folder is a data package, so
``_BASE_`` paths between configs stay valid."""

from setuptools import find_namespace_packages, find_packages, setup

CONFIG_PACKAGES = [
    "uper_parsing.configs",
    *(f"uper_parsing.configs.{name}" for name in find_namespace_packages(where="configs")),
]

setup(
    packages=[*find_packages(include=["uper_parsing*"]), *CONFIG_PACKAGES],
    package_dir={"uper_parsing.configs": "configs"},
    package_data={name: ["*.yaml"] for name in CONFIG_PACKAGES},
)
