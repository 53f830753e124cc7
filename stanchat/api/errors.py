"""`ApiError`: an error a client caused or must handle, sent as an OpenAI-style JSON error object;
`ClientGone`: a client that left. (Which exceptions are the server's own faults: `stanchat.api.faults`.)"""

from __future__ import annotations

from stanchat.errors import ADVICE, StanchatError, Words

# HTTP status -> the OpenAI error `type` clients switch on
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 408: "invalid_request_error", 413: "invalid_request_error",
               422: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class ApiError(Exception):
    """One clear line for the client and the HTTP status that goes with it."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict:
        """`{"error": {"message", "type", "param", "code"}}` as the OpenAI API sends it."""
        return {"error": {"message": self.message, "type": ERROR_TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}


class ClientGone(Exception):
    """The client closed its connection before its answer: nothing to send; its work is cancelled."""


# a library option -> the request field a client sets
FIELDS = {"question": "messages", "max_new_tokens": "max_tokens"}


class ApiWords(Words):
    """The API's words for the library's errors: request fields, not flags."""

    advice = {**ADVICE, "reset": "send fewer turns"}

    def name(self, option: str) -> str:
        return FIELDS.get(option, option)

    def set(self, option: str, value: object) -> str:
        return f"set {self.name(option)} to {value!r}" if isinstance(value, str) else f"set {self.name(option)} to {value}"

    def also(self, option: str, value: object) -> str:
        return f"{self.name(option)} to {value!r}" if isinstance(value, str) else f"{self.name(option)} to {value}"


API = ApiWords()


def client_error(err: StanchatError) -> ApiError:
    """A library error as the 400 a client reads, in the API's words, naming the field it is about."""
    return ApiError(400, err.worded(API), param=API.name(err.param) if err.param else "messages")
