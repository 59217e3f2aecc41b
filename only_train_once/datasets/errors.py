"""The one exception the data loaders raise for missing data."""


class DatasetNotInstalledError(FileNotFoundError):
    """A data set's files are not on this machine; the message says how to install them."""

    def __init__(self, name: str, looked_in: str, install: str):
        super().__init__(f"{name} was not found (looked in {looked_in}). Install it with: {install}")
        self.install = install
