"""The one exception type users see as a one-line message (CLI exit code 2)."""


class TicketlabError(Exception):
    """Bad input or state the user can fix; the message names the problem and the fix."""
