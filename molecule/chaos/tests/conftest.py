"""The scenario drives the lab with tests/lab/labctl.py (repository root on sys.path)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(
    0, os.environ.get("MOLECULE_PROJECT_DIRECTORY") or str(Path(__file__).resolve().parents[3])
)
