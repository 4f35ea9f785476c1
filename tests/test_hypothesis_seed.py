"""Property tests draw new examples each run, from one seed that pytest's header prints and
``--hypothesis-seed`` replays (tests/conftest.py)."""

import conftest
from hypothesis import settings


def test_the_run_has_a_printed_seed_and_fresh_examples(pytestconfig):
    seed = pytestconfig.getoption("hypothesis_seed")
    assert seed is not None and int(seed) >= 0, seed
    assert f"--hypothesis-seed={seed}" in conftest.pytest_report_header(pytestconfig)
    assert settings().derandomize is False  # not the same fixed examples every run
    assert settings.get_profile("nightly").max_examples > settings().max_examples
