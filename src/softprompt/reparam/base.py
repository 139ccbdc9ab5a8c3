"""What every reparameterisation is: a module whose forward computes the (P, H) prompt from its own parameters
during training, and which folds, once trained, into that plain prompt."""

import torch
from torch import nn


class Reparam(nn.Module):
    """A training-time parameterisation of one (P, H) prompt. Subclasses set `name` and define `forward`."""

    name = ""

    def forward(self) -> torch.Tensor:
        """The prompt, (P, H) float32, differentiable in the trained parameters."""
        raise NotImplementedError

    @torch.no_grad()
    def fold(self) -> torch.Tensor:
        """The plain (P, H) prompt the model sees at inference: the forward in eval mode (no dropout), detached."""
        was_training = self.training
        self.eval()
        try:
            return self().detach().clone()
        finally:
            self.train(was_training)

    def trainable_parameters(self) -> int:
        """How many numbers training changes (and a compact copy of the reparameterisation would store)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def describe(self) -> dict:
        """What a prompt file records about how it was trained: the name, the options, the trainable count."""
        return {"name": self.name, **self.options(), "trainable_parameters": self.trainable_parameters()}

    def options(self) -> dict:
        return {}
