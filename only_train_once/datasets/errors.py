"""The one exception the data loaders raise for missing data, and where installed data packages keep their files."""

import importlib.util
import os


class DatasetNotInstalledError(FileNotFoundError):
    """A data set's files are not on this machine; the message says how to install them."""

    def __init__(self, name: str, looked_in: str, install: str):
        super().__init__(f"{name} was not found (looked in {looked_in}). Install it with: {install}")
        self.install = install


def installed_package_path(package: str, relative: str, name: str, install: str) -> str:
    """Path of ``relative`` inside the installed ``package``, found without importing it (some of these packages
    read or print their whole data set on import); :class:`DatasetNotInstalledError` naming ``name`` if absent."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = os.path.join(location, relative)
        if os.path.exists(path):
            return path
    raise DatasetNotInstalledError(name, ", ".join(locations) or f"no package {package!r}", install)
