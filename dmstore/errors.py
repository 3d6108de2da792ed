"""The one exception type that dmstore raises for bad input or a failed precondition."""

from __future__ import annotations


class DmstoreError(Exception):
    """A problem the user can fix, stated in one line: what is wrong and what to do.

    The CLI prints ``dmstore: error: <message>`` and exits with ``exit_code``
    (2 for bad usage or bad input, 1 for failures of the environment such as a full disk).
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self):  # keep exit_code when the error crosses from a Dask worker
        return (type(self), (str(self), self.exit_code))
