"""The README's compatibility table is the rule registry's, and every rule can fire."""

from __future__ import annotations

from conftest import ROOT

from hydratune.rules import END, START, markdown_table
from hydratune.tasks.registry import all_rules

RULES = all_rules()


def test_readme_table_matches_the_registry():
    text = (ROOT / "README.md").read_text()
    table = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert table == markdown_table(RULES), "run: python -m hydratune.rules --update README.md"


def test_rule_names_are_unique_and_messages_name_a_fix():
    names = [rule.name for rule in RULES]
    assert len(names) == len(set(names))
    for rule in RULES:
        assert any(word in rule.message for word in ("=", "use ", "set ")), rule.name
