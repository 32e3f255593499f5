"""The one exception type users see as a one-line message (CLI exit code 2)."""


class TicketlabError(Exception):
    """Bad input or state the user can fix; the message names the problem and the fix."""


class DamagedFile(TicketlabError):
    """A file a run wrote no longer holds what was written (or the wrong thing).

    Raised by the readers with the file and the reason; `RunStore` re-raises it with the unit
    it belongs to, so the message can say which folder to delete (or `--recompute`).
    """

    def __init__(self, path: object, reason: str, advice: str = "delete it to recompute"):
        self.path, self.reason = path, reason
        super().__init__(f"{path} is damaged ({reason}): {advice}")
