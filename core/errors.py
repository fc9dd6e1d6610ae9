class ApplicationError(Exception):
    """The one error type that services raise for a user's mistake; the API turns it into a 4xx in the one
    error shape (core/api.py).

    `extra` carries structured detail (row numbers, field names) for the client; `code` a machine-readable
    name (default: by status, core.api.STATUS_CODES).
    """

    status_code = 400

    def __init__(self, message: str, *, extra: dict | None = None, status_code: int | None = None, code: str = ""):
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
        self.code = code
        if status_code is not None:
            self.status_code = status_code
