"""ChildRuntime factories for the sandbox tests: the real references with their guards off.

Imported in the confined child only. Each turns porter's op allow-list off (through its API,
in the child) so that nothing but the Landlock sandbox stands between a hostile graph and the
filesystem.
"""

from __future__ import annotations

from typing import Any

PRELOAD = ("tensorflow",)


def unchecked_frozen(payload: dict[str, Any]) -> Any:
    """``tf1:frozen`` with ``check_graph_ops`` replaced by a no-op."""
    import porter.importers.tf_ops as tf_ops
    from porter.verification.runtimes import tf1

    tf_ops.check_graph_ops = lambda *args, **kwargs: None
    return tf1.frozen(payload)
