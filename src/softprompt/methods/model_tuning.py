"""model: model tuning. Every weight of the base model trains (AdamW, lr 5e-5 as in the seed reimplementation); the
whole tuned model is saved with save_pretrained (safetensors), with its tokenizer, so that it loads as any model folder."""

from softprompt.core.families import ENCODER_ONLY
from softprompt.files.atomic import atomic_folder
from softprompt.methods.base import Method, write_metadata
from softprompt.models.model import SoftPromptModel


class ModelTuning(Method):
    name = "model"
    lr = 5e-5
    result = "model"
    output = "model"

    def prepare(self, model, task, train_examples, seed):
        super().prepare(model, task, train_examples, seed)
        model.base.requires_grad_(True)
        if model.family == ENCODER_ONLY and getattr(model.base, "pooler", None) is not None:
            model.base.pooler.requires_grad_(False)  # BERT's pooler: the mean-pooled readout never uses it

    def save(self, model, folder, metadata):
        with atomic_folder(self.path(folder)) as tmp:
            model.base.save_pretrained(tmp)
            model.tokenizer.save_pretrained(tmp)
            write_metadata(tmp, metadata)
        return self.path(folder)

    def load(self, model, folder):
        return SoftPromptModel.load(str(self.path(folder)), family=model.family, readout_scale=model.readout_scale)
