"""The fast loop (``pytest -m "not slow"``) leaves out every test that trains a model."""

from conftest import MODEL_TRAINING_FIXTURES


def test_tests_using_a_training_fixture_are_slow(request):
    items = request.session.items
    using = [i for i in items if MODEL_TRAINING_FIXTURES & set(getattr(i, "fixturenames", ()))]
    if not using:  # a run of selected tests that reaches none of them: nothing to check
        return
    unmarked = [i.nodeid for i in using if i.get_closest_marker("slow") is None]
    assert not unmarked, f"tests that train a model but are not marked slow: {unmarked}"
