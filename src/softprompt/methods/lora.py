"""lora: LoRA (Hu et al. 2021) through peft: low-rank updates B A (rank r, scaled by alpha / r) beside the frozen
attention projections that peft picks for the model type (query and value for BERT, T5 and Llama; GPT-2's fused
c_attn), or beside every linear layer for a model type peft does not know."""

from softprompt.methods.wrapped import TASK_TYPES, PeftMethod


class LoRA(PeftMethod):
    name = "lora"
    own_options = ("method.lora_rank", "method.lora_alpha")
    lr = 5e-4
    result = "LoRA adapter"
    output = "lora"

    def peft_config(self, model):
        from peft import LoraConfig
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as KNOWN

        targets = None if model.base.config.model_type in KNOWN else "all-linear"
        return LoraConfig(
            r=self.options.lora_rank,
            lora_alpha=self.options.lora_alpha,
            target_modules=targets,
            task_type=TASK_TYPES[model.family],
        )
