"""The one error the image build raises: the build cannot go on, and says why."""


class ImageBuildError(Exception):
    """A build step failed; the message names the step and carries the tool's own reason."""
