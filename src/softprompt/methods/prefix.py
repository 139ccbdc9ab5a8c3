"""prefix: prefix tuning (Li & Liang 2021) through peft: learned keys and values for `prefix_length` positions in
every attention layer, handed to the base model as its past key values.

peft generates only from token ids, not from input embeddings: a prefix-tuned encoder-decoder or decoder-only model
can score labels (classification) but not generate text here."""

from softprompt.core.families import ENCODER_ONLY
from softprompt.errors import UserError
from softprompt.methods.wrapped import TASK_TYPES, PeftMethod


class PrefixTuning(PeftMethod):
    name = "prefix"
    own_options = ("method.prefix_length",)
    lr = 1e-2
    result = "prefix"
    output = "prefix"

    def peft_config(self, model):
        from peft import PrefixTuningConfig

        config = model.base.config
        sizes = {}
        if getattr(config, "d_kv", None):  # T5: heads x d_kv need not equal d_model
            sizes = {"num_attention_heads": config.num_heads, "token_dim": config.num_heads * config.d_kv}
        return PrefixTuningConfig(
            num_virtual_tokens=self.options.prefix_length, task_type=TASK_TYPES[model.family], **sizes
        )

    def prepare(self, model, task, train_examples, seed):
        if model.family != ENCODER_ONLY and not getattr(task, "label_texts", None):
            raise UserError(
                f"--method prefix: peft's prefix tuning cannot generate text from input embeddings on a {model.family} "
                f"model; use a classification task or another method"
            )
        super().prepare(model, task, train_examples, seed)
        self.reserve_positions(model)

    def load(self, model, folder):
        model = super().load(model, folder)
        self.reserve_positions(model)
        return model

    def reserve_positions(self, model):
        """The prefix takes the first positions of models with absolute positions (peft shifts the inputs' ones)."""
        if model.max_positions is not None:
            model.max_positions -= model.base.peft_config["default"].num_virtual_tokens
