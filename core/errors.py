class ApplicationError(Exception):
    """The one error type that services raise for a user's mistake; the API turns it into a 400.

    `extra` carries structured detail (row numbers, field names) for the client.
    """

    status_code = 400

    def __init__(self, message: str, *, extra: dict | None = None, status_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
        if status_code is not None:
            self.status_code = status_code
