"""SAFETY.md's traceability table cannot go stale and no requirement is left untested."""

from safety_trace import SAFETY, defined, tagged_tests, updated


def test_every_requirement_has_a_test():
    tags = tagged_tests()
    missing = [r for r in defined() if not tags.get(r)]
    assert not missing, f"requirements without a test: {missing}"


def test_every_tag_names_a_defined_requirement():
    unknown = sorted(set(tagged_tests()) - set(defined()))
    assert not unknown, f"tests name requirements SAFETY.md does not define: {unknown}"


def test_safety_md_table_is_generated_from_the_tests():
    assert SAFETY.read_text() == updated(), "SAFETY.md is stale: run python tests/safety_trace.py"
