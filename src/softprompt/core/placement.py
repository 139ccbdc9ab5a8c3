"""Where the prompt sits: a `{prompt}` slot in the template, found again among the input's tokens.

A template renders its slot as MARK, a private-use character, so that the slot travels inside the input text through
fitting, scoring, generation and serving. Tokenisation strips it: a row's token ids are those of the text without
the slot, and the slot becomes a token index, after the leading special token ([CLS], <s>) and after the tokens of
the text before the slot. When the tokenizer merges a token across the slot (no space between the words on either
side), the prompt goes before that token. A text without MARK places its prompt as before: right after the leading
special token.
"""

SLOT = "prompt"  # `{prompt}` in a template
MARK = "\ue000"  # the slot in a rendered text


def split_slot(text: str) -> tuple[str, str] | None:
    """The text before the slot and after it, or None when the text has no slot."""
    before, mark, after = text.partition(MARK)
    return (before, after.replace(MARK, "")) if mark else None


def without_slot(text: str) -> str:
    return text.replace(MARK, "")


def slot_offsets(tokenizer, texts: list[str], rows: list[list[int]], after_special: int) -> list[int]:
    """Each row's slot as an index into its token ids `rows` (the tokenised `texts` without MARK, special tokens
    included, unpadded or right-padded): `after_special` plus the tokens the row shares with the text before the slot."""
    parts = [split_slot(text) for text in texts]
    slotted = [i for i, part in enumerate(parts) if part is not None]
    offsets = [after_special] * len(texts)
    if not slotted:
        return offsets
    befores = tokenizer([parts[i][0] for i in slotted], add_special_tokens=False)["input_ids"]
    for i, before in zip(slotted, befores):
        row = list(rows[i][after_special:])
        shared = next((k for k, (a, b) in enumerate(zip(before, row)) if a != b), min(len(before), len(row)))
        offsets[i] = after_special + shared
    return offsets
