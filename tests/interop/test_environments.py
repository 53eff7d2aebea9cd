"""The interop environments are rebuilt exactly when their marker does not describe them."""

from __future__ import annotations

from pathlib import Path

from tests.interop.environments import MARKER_NAME, _marker_matches, _write_marker


def test_marker_reuses_only_a_completed_environment_of_the_same_spec(tmp_path: Path) -> None:
    """Proves reuse is keyed on the exact spec: no marker, a corrupt marker or another spec means rebuild."""
    spec: dict[str, object] = {"kind": "npm", "package": "iii-sdk@0.22.1"}
    assert not _marker_matches(tmp_path, spec)  # never completed

    (tmp_path / MARKER_NAME).write_text("{not json")
    assert not _marker_matches(tmp_path, spec)  # interrupted or damaged

    _write_marker(tmp_path, spec)
    assert _marker_matches(tmp_path, spec)
    assert not _marker_matches(tmp_path, {**spec, "package": "iii-sdk@0.22.0"})
