"""softprompt: prompt tuning (Lester, Al-Rfou & Constant 2021) for any frozen Hugging Face model."""

from softprompt.core.bank import PromptBank
from softprompt.errors import UserError
from softprompt.files.prompt_file import PromptFile, load_prompt, save_prompt
from softprompt.models.model import SoftPromptModel

__all__ = ["PromptBank", "PromptFile", "SoftPromptModel", "UserError", "load_prompt", "save_prompt"]
__version__ = "0.1.0"
