"""What this software is called, and its version: every spelling of its name, in one place."""

__version__ = "0.1.0"

#: The distribution's name on the package index, for ``pip install``. It is not
#: ``layer-sdk``: an unrelated package of the public index has that name. The
#: import name stays ``layer_sdk`` and the command stays ``layer-sdk``.
DISTRIBUTION = "layer-api-client"

# Two spellings of the SDK's name travel to the Layer API, each exactly as the
# original SDK sent it, because the service may rely on either: one in every
# request's header, one in every session's attributes. They differ on purpose;
# do not "fix" one to match the other.

#: The ``User-Agent`` header of every request.
USER_AGENT = f"layer-sdk-python/{__version__}"
#: The ``source`` attribute of every session.
SOURCE = f"layer-python-sdk/{__version__}"
