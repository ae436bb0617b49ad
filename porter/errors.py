"""One exception hierarchy for porter; the CLI turns each into a one-line message."""

from __future__ import annotations

import struct

__all__ = [
    "PorterError",
    "FormatError",
    "UnsafeSourceError",
    "UnsupportedOpError",
    "MappingError",
    "ParityError",
    "AuditError",
    "IntegrityError",
    "ZooError",
    "OutputError",
    "TrustError",
    "CHECK_FAILED",
    "FOREIGN_ERRORS",
    "foreign_error",
]

#: What parsers of untrusted bytes (porter's own, protobuf, numpy, onnx) raise on malformed
#: input. Importers turn these into a FormatError at their boundary (see ``foreign_error``).
FOREIGN_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, TypeError, KeyError, IndexError, AttributeError, LookupError, EOFError,
    ArithmeticError, RuntimeError, MemoryError, UnicodeError, struct.error, OSError,
    SystemError, AssertionError)


class PorterError(Exception):
    """Base class: every error porter raises on purpose derives from it."""


class FormatError(PorterError):
    """A file is missing, of an unknown format, truncated or corrupt."""


class UnsafeSourceError(FormatError):
    """A source tries something porter refuses: code in a pickle, a path leaving its folder."""


class UnsupportedOpError(PorterError):
    """An operator (with its domain and opset) has no converter."""

    def __init__(self, op_type: str, opset: int, domain: str = "") -> None:
        self.op_type, self.opset, self.domain = op_type, opset, domain
        where = f"{domain}::" if domain else ""
        hint = ""
        if domain == "com.microsoft":  # what onnxruntime's tools write: say what to do instead
            hint = (" (an onnxruntime contrib op, not standard ONNX: convert the float model, or "
                    "one quantized with QuantFormat.QDQ, whose QuantizeLinear/DequantizeLinear "
                    "pairs porter converts)")
        super().__init__(f"no converter for {where}{op_type} at opset {opset}{hint}")


class MappingError(PorterError):
    """Source tensors and target parameters do not line up (leftovers, ties, shape clashes)."""


class ParityError(PorterError):
    """The ported module disagrees with the source runtime beyond tolerance."""


class AuditError(PorterError):
    """The NPU audit found operators with no NPU kernel."""


class IntegrityError(PorterError):
    """A file's digest does not match the one recorded for it."""


class ZooError(PorterError):
    """A zoo or catalog entry is unknown, malformed or cannot be fetched."""


class OutputError(PorterError):
    """A destination porter must not write: a file in the way, a foreign folder, read-only."""


class TrustError(PorterError):
    """Loading would execute code the publisher did not pin (see ``trust_code``)."""


#: Errors that mean "a check ran and failed" (exit 1), as opposed to bad input (exit 2).
CHECK_FAILED = (ParityError, AuditError, IntegrityError)


def foreign_error(what: str, exc: BaseException) -> FormatError:
    """One FormatError line for a foreign exception raised while reading ``what``."""
    if isinstance(exc, OSError) and not isinstance(exc, (EOFError,)):
        reason = exc.strerror or str(exc) or type(exc).__name__
        return FormatError(f"{what}: cannot read ({reason})")
    if isinstance(exc, MemoryError):
        return FormatError(f"{what}: not readable (it claims more memory than is available)")
    text = " ".join(str(exc).split())[:200]
    return FormatError(f"{what}: not readable (truncated or corrupt: "
                       f"{type(exc).__name__}{': ' + text if text else ''})")
