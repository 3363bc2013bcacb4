"""YAML that refuses a mapping holding the same key twice.

PyYAML keeps the last of two equal keys without a word, so a setting written twice
(one copy forgotten further down) would silently override the first.
"""

from __future__ import annotations

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.YAMLError):
    """A mapping holds one key twice; ``key_path`` is dotted like a validation error's."""

    def __init__(self, key_path: str, line: int, first_line: int):
        super().__init__(f"{key_path}: duplicate key at line {line} (first at line {first_line})")
        self.key_path, self.line, self.first_line = key_path, line, first_line


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader whose documents must not repeat a key inside one mapping."""

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        _refuse_duplicate_keys(node, (), set())
        return self.construct_document(node)


def _refuse_duplicate_keys(node: yaml.Node, path: tuple[str, ...], visited: set[int]) -> None:
    if id(node) in visited:  # an alias repeats a node already checked (or recurses into itself)
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_lines: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            if key.tag == _MERGE_TAG:  # "<<: *defaults" keys may be overridden on purpose
                _refuse_duplicate_keys(value, path, visited)
                continue
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
            if isinstance(key, yaml.ScalarNode):
                identity = (key.tag, key.value)
                if identity in first_lines:
                    raise DuplicateKeyError(".".join((*path, name)), key.start_mark.line + 1, first_lines[identity])
                first_lines[identity] = key.start_mark.line + 1
            _refuse_duplicate_keys(value, (*path, name), visited)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicate_keys(item, (*path, str(index)), visited)


def load_unique_key_yaml(text: str):
    """The data of one YAML document; raises :class:`DuplicateKeyError` on a repeated key."""
    return yaml.load(text, Loader=UniqueKeyLoader)
