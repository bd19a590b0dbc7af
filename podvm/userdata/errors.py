"""Errors of `process-user-data`, one type per way it can fail."""


class UserDataError(Exception):
    """Base class: provisioning could not complete."""


class SourceConfigError(UserDataError):
    """A source was configured with an unusable setting (for example a malformed URL)."""


class FetchError(UserDataError):
    """One attempt to read user data failed; the caller may retry."""


class UserDataTimeout(UserDataError):
    """No valid user data arrived before the fetch timeout."""


class ProvisionError(UserDataError):
    """Files could not be written, or the initdata is unusable."""
