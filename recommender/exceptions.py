"""Named errors. Each message says what is wrong, where, and what to do."""


class RecommenderError(Exception):
    """Base class of every error this package raises on purpose."""


class DataValidationError(RecommenderError, ValueError):
    """An extract (customers, holdings) is missing, malformed or inconsistent.

    ``source`` names the file, ``column`` the column, ``rows`` the first offending row
    numbers (0-based positions in the file, header excluded). A customer described in a
    request is no file: ``field`` names the field of the request body instead. ``problem``
    is what is wrong with the values, without where ("is empty"), when that is all.
    """

    def __init__(
        self, message: str, *, source: str = "", column: str = "", rows: tuple = (),
        field: str = "", problem: str = "",
    ) -> None:
        self.reason, self.problem = message, problem
        self.source, self.column, self.rows, self.field = source, column, tuple(rows), field
        where = ", ".join(
            part
            for part in (
                f"file {source}" if source else "",
                f"field {field!r}" if field else "",
                f"column {column!r}" if column else "",
                f"first offending rows {list(self.rows)}" if self.rows else "",
            )
            if part
        )
        super().__init__(f"{message} ({where})" if where else message)

    def __reduce__(self):  # whole, with where it is, when it crosses processes (Spark tasks)
        return (_rebuilt, (type(self), self.reason, {
            "source": self.source, "column": self.column, "rows": self.rows,
            "field": self.field, "problem": self.problem}))


def _rebuilt(kind: type[DataValidationError], message: str, where: dict) -> DataValidationError:
    return kind(message, **where)


class InsufficientDataError(DataValidationError):
    """Valid data, but too little of it for what was asked (too few months or events)."""


class CatalogError(RecommenderError, ValueError):
    """The product catalog TOML is malformed or inconsistent."""


class ConfigError(RecommenderError, ValueError):
    """A configuration (training parameters, life-stage rules) is invalid."""


class NotFittedError(RecommenderError, RuntimeError):
    """A model was used before ``fit`` was called."""


class UnknownIdError(RecommenderError, KeyError):
    """An external id (customer or product) is not in the id map."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class UnknownCustomerError(UnknownIdError):
    """The customer is not in the bank's data the service was started with."""


class ArtifactError(RecommenderError, RuntimeError):
    """A model artifact folder is missing, corrupt or incompatible."""
