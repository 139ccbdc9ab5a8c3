"""Print each package whose pinned version differs between two `pip freeze` files: python compare_pins.py OLD NEW."""

import sys


def pins(path: str) -> dict[str, str]:
    lines = (line.strip() for line in open(path, encoding="utf-8"))
    return {
        name.lower(): version
        for name, _, version in (line.partition("==") for line in lines if "==" in line and not line.startswith("#"))
    }


old, new = pins(sys.argv[1]), pins(sys.argv[2])
changed = [
    f"  {name}: {old.get(name, '(none)')} -> {new.get(name, '(none)')}"
    for name in sorted(old.keys() | new.keys())
    if old.get(name) != new.get(name)
]
print("\n".join(changed) or "  none")
