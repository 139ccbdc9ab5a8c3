"""Methods that peft implements (prefix tuning, LoRA): the frozen base model is wrapped with `get_peft_model`, so the
model's own forward, which calls the base on joined input embeddings, runs through peft unchanged."""

import warnings

from softprompt.core.families import DECODER_ONLY, ENCODER_DECODER, ENCODER_ONLY
from softprompt.files.atomic import atomic_folder
from softprompt.methods.base import Method, write_metadata

TASK_TYPES = {ENCODER_DECODER: "SEQ_2_SEQ_LM", DECODER_ONLY: "CAUSAL_LM", ENCODER_ONLY: "FEATURE_EXTRACTION"}


class PeftMethod(Method):
    def peft_config(self, model):
        """The peft configuration of this method for `model`."""
        raise NotImplementedError

    def prepare(self, model, task, train_examples, seed):
        from peft import get_peft_model

        super().prepare(model, task, train_examples, seed)
        with warnings.catch_warnings():  # peft's notes on transformers deprecations and GPT-2's Conv1D layers
            warnings.simplefilter("ignore")
            model.base = get_peft_model(model.base, self.peft_config(model))

    def save(self, model, folder, metadata):
        with atomic_folder(self.path(folder)) as tmp:
            model.base.save_pretrained(tmp)
            (tmp / "README.md").unlink(missing_ok=True)  # peft's model-card template
            write_metadata(tmp, metadata)
        return self.path(folder)

    def load(self, model, folder):
        from peft import PeftModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.base = PeftModel.from_pretrained(model.base, str(self.path(folder)))
        model.eval()
        return model
