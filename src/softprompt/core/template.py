"""Input templates: fixed words and named fields, rendered to fit a token budget.

`"sentence: {}"` has one field, written `{}`, that holds the task's input column; `"question: {question} context:
{context}"` names its columns. When a rendered input is too long, the longest field is cut at a word boundary (then
the next longest, if need be): the template's fixed words, the other fields and the tokenizer's special tokens stay.
A task may name fields to cut first whatever their length (a passage before its question); the rest follow longest first.

`{prompt}`, at most once, is no field: it marks where the soft prompt goes (placement.py), and like the fixed words
it is never cut.
"""

import re
from collections.abc import Callable

from softprompt.core.placement import MARK, SLOT
from softprompt.errors import UserError

FIELD = re.compile(r"\{(\w*)\}")


class Template:
    def __init__(self, text: str, option: str = "--data.template", cut_first: tuple[str, ...] = ()):
        self.text = text
        self.parts = FIELD.split(text)  # fixed words at even indices, field names (and the slot) at odd ones
        if self.parts[1::2].count(SLOT) > 1:
            raise UserError(
                f"{option}: {text!r} has {{{SLOT}}} {self.parts[1::2].count(SLOT)} times; a prompt goes in one place"
            )
        self.fields = list(dict.fromkeys(f for f in self.parts[1::2] if f != SLOT))
        if not self.fields:
            raise UserError(
                f"{option}: {text!r} uses no input field; write {{}} where the input goes (or {{column}} for a named column)"
            )
        self.cut_first = [f for f in cut_first if f in self.fields]

    @property
    def single(self) -> bool:
        """True when the template has one field (so a plain text can fill it)."""
        return len(self.fields) == 1

    @property
    def slotted(self) -> bool:
        """True when the template says where the prompt goes."""
        return SLOT in self.parts[1::2]

    def render(self, values: dict[str, str]) -> str:
        """The template filled with `values`; its slot, if any, is MARK (never a MARK that an input carries)."""
        return "".join(
            (MARK if p == SLOT else values[p].replace(MARK, "")) if i % 2 else p for i, p in enumerate(self.parts)
        )

    def fit(self, values: dict[str, str], count_tokens: Callable[[str], int], budget: int) -> str:
        """The rendered text, with fields cut until `count_tokens` of it is at most `budget`: those of `cut_first` in
        their order, then the longest."""
        values = dict(values)
        if count_tokens(self.render(values)) <= budget:
            return self.render(values)
        rest = sorted((f for f in self.fields if f not in self.cut_first), key=lambda f: len(values[f]), reverse=True)
        for field in [*self.cut_first, *rest]:
            text = values[field]
            cuts = _cut_points(text)
            fits = lambda n: count_tokens(self.render({**values, field: text[: cuts[n]]})) <= budget  # noqa: E731, B023  (used in this iteration)
            lo, hi = 0, len(cuts) - 1  # cuts[0] == 0 (field emptied); find the longest prefix that fits
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
            values[field] = text[: cuts[lo]]
            if fits(lo):
                return self.render(values)
        raise UserError(
            f"--data.template: {self.text!r} alone takes {count_tokens(self.render(values))} tokens, more than the "
            f"{budget} the model leaves for the input beside the prompt: shorten the template or the prompt"
        )


def _cut_points(text: str) -> list[int]:
    """Where a field may be cut: after each word, or after each character for text without spaces (0 first)."""
    ends = [m.end() for m in re.finditer(r"\S+", text)]
    if len(ends) <= 1:
        ends = list(range(1, len(text) + 1))
    return [0, *ends]


PLAIN = Template("{}")
