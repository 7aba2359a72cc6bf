"""Where things are, for tests in any folder below tests/."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
#: Small real rasters with provenance, beside the repository (tests that need them skip without it).
REALDATA = REPO.parent / "shared" / "realdata"
