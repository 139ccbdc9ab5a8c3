"""The three model families a prompt is joined into, named once (options.Family is the option's type)."""

from typing import get_args

from softprompt.options import Family

FAMILIES: tuple[str, ...] = get_args(Family)
ENCODER_DECODER, DECODER_ONLY, ENCODER_ONLY = FAMILIES
