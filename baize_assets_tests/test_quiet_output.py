"""What a user sees: loading the code location prints no warning that asks nothing of them."""

import subprocess
import sys

LOAD_STRICTLY = """
import warnings
from dagster import BetaWarning, PreviewWarning
warnings.simplefilter("error", PreviewWarning)
warnings.simplefilter("error", BetaWarning)
import baize_assets.definitions
"""


def test_loading_the_definitions_raises_no_dagster_preview_or_beta_warning():
    result = subprocess.run([sys.executable, "-c", LOAD_STRICTLY], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
